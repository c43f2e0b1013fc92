"""Decisions on trace forks are trace steps themselves (DESIGN §3 flow 5), so they replicate
with segments like any reasoning and every node applies the same one.

A decision is a two-step session by the deciding node, goal `decision:<forked session>`:
a root of kind `decision` whose content is canonical JSON
`{"session", "parent", "branch", "verdict": "approve"|"reject"}`, then a `conclusion`
repeating the verdict (so it passes COHERENCE-CHECK and publishes like any session). For a
fork the latest decision wins (by timestamp, then by smallest hash), on every node alike.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass

from folders.errors import TraceError, echo
from folders.forks import Fork, choose_branch
from folders.trace import TraceDB, as_connection, canonical_json

DECISION_GOAL_PREFIX = "decision:"
VERDICTS = ("approve", "reject")
#: A verdict once made, as the queue, `forks` and the TUI say it ("approved on laptop").
PAST = {"approve": "approved", "reject": "rejected"}


def fork_id(fork: Fork) -> str:
    """A short id that is the same on every node: it depends only on where the fork is."""
    return hashlib.sha256(f"{fork.session}:{fork.parent or ''}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Decision:
    step: str
    author: str
    ts: str
    branch: str
    verdict: str


@dataclass(frozen=True)
class ForkView:
    """A fork with what trace-consensus picks, what people decided and what applies."""

    id: str
    session: str
    goal: str
    parent: str | None
    branches: tuple[str, ...]
    consensus_branch: str
    decision: Decision | None
    chosen: str


def record_decision(trace: TraceDB, fork: Fork, branch: str, verdict: str) -> str:
    if verdict not in VERDICTS:
        raise TraceError(f"A decision is 'approve' or 'reject', not {echo(verdict)}.")
    if branch not in fork.branches:
        raise TraceError(f"Step {echo(branch, quoted=False)} is not a branch of fork {fork_id(fork)}; pick one of "
                         f"{', '.join(b[:19] for b in fork.branches)}.")
    content = canonical_json({"session": fork.session, "parent": fork.parent, "branch": branch,
                              "verdict": verdict}).decode()
    session = trace.start_session(DECISION_GOAL_PREFIX + fork.session, content, kind="decision")
    return trace.finish(session, f"{verdict} {branch}")


def decisions_for(db: TraceDB | sqlite3.Connection, fork: Fork) -> list[Decision]:
    """Every decision on this fork that trace.db holds, latest first."""
    rows = as_connection(db).execute(
        "SELECT hash, author, ts, content FROM steps WHERE goal = ? AND kind = 'decision' "
        "ORDER BY ts DESC, hash", (DECISION_GOAL_PREFIX + fork.session,))
    found = []
    for step, author, ts, content in rows:
        try:
            data = json.loads(content)
        except ValueError:
            continue
        if (data.get("parent") == fork.parent and data.get("branch") in fork.branches
                and data.get("verdict") in VERDICTS):
            found.append(Decision(step, author, ts, data["branch"], data["verdict"]))
    return found


def view_fork(db: TraceDB | sqlite3.Connection, fork: Fork) -> ForkView:
    """Approve picks the branch; reject takes it out of the running; no decision: consensus."""
    conn = as_connection(db)
    goal = conn.execute("SELECT goal FROM steps WHERE session = ? LIMIT 1", (fork.session,)).fetchone()[0]
    consensus_branch = choose_branch(conn, fork)
    latest = next(iter(decisions_for(conn, fork)), None)
    chosen = consensus_branch
    if latest is not None and latest.verdict == "approve":
        chosen = latest.branch
    elif latest is not None and latest.branch == chosen:
        rest = tuple(b for b in fork.branches if b != latest.branch)
        chosen = choose_branch(conn, Fork(fork.session, fork.parent, rest)) if rest else chosen
    return ForkView(fork_id(fork), fork.session, goal, fork.parent, fork.branches,
                    consensus_branch, latest, chosen)


#: Goal prefix of a decision on a conflict-queue item (goal `decision:item:<item key>`).
ITEM_GOAL_PREFIX = DECISION_GOAL_PREFIX + "item:"


def record_item_decision(trace: TraceDB, key: str, verdict: str, kept: str | None) -> str:
    """A decision on a queue item, as a trace session of the deciding node, so every peer
    learns who decided it and how once the trace is published and merged (queue ids are per
    node; `key` names the item alike everywhere). `kept` is the hash of the version kept."""
    if verdict not in VERDICTS:
        raise TraceError(f"A decision is 'approve' or 'reject', not {echo(verdict)}.")
    content = canonical_json({"item": key, "verdict": verdict, "kept": kept}).decode()
    session = trace.start_session(ITEM_GOAL_PREFIX + key, content, kind="decision")
    return trace.finish(session, f"{verdict} {key}")


def item_decisions(db: TraceDB | sqlite3.Connection, keys: list[str]) -> dict[str, Decision]:
    """The latest decision on each item that trace.db holds (any node's), by item key;
    `Decision.branch` is the hash of the version kept."""
    found: dict[str, Decision] = {}
    if not keys:
        return found
    rows = as_connection(db).execute(
        "SELECT hash, author, ts, content FROM steps WHERE kind = 'decision' AND goal IN "
        "(SELECT ? || value FROM json_each(?)) ORDER BY ts, hash", (ITEM_GOAL_PREFIX, json.dumps(keys)))
    for step, author, ts, content in rows:
        try:
            data = json.loads(content)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("item") in keys and data.get("verdict") in VERDICTS:
            found[data["item"]] = Decision(step, author, ts, data.get("kept") or "", data["verdict"])
    return found
