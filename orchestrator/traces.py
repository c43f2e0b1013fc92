"""Trace services for the CLI and the TUI: record reasoning, read it back, see forks and
decide them. Publishing, merging, snapshots and restore live in orchestrator/recovery.py."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from folders.decisions import DECISION_GOAL_PREFIX, ForkView, fork_id, record_decision, view_fork
from folders.errors import TraceError, echo
from folders.ids import by_prefix
from folders.consensus import Consensus, consensus
from folders.forks import Fork, detect_forks, in_order
from folders.trace import GoalSummary, Problem, SessionSummary, Step, TraceDB, as_connection, coherence_check
from folders.tracemark import TraceMark, mark_now, touched_since
from orchestrator.dbversion import Memo
from orchestrator.node import Node


def open_trace(node: Node) -> TraceDB:
    return TraceDB(node.layout.trace_db, node.name)


def start(node: Node, goal: str, content: str | None = None) -> str:
    if not goal.strip() or goal.startswith(DECISION_GOAL_PREFIX):
        raise TraceError(f"Goal {echo(goal)} is not allowed; give a goal in words, e.g. "
                         "'plan the week' (it may not start with 'decision:').")
    with open_trace(node) as trace:
        return trace.start_session(goal, content)


def session_id(trace: TraceDB, given: str) -> str:
    """The session `given` names: its whole id or a unique beginning of it (`trace query`
    lists 12 characters); unchanged when no session begins with it, for the caller's own
    'no such session' sentence."""
    typed = given.strip()
    rows = as_connection(trace).execute("SELECT DISTINCT session FROM steps WHERE session >= ? AND session < ?",
                                        (typed, typed + "\U0010ffff")).fetchall()
    if not typed or not rows:
        return given
    return by_prefix(typed, [r[0] for r in rows], what="session", listing="twinsync trace query GOAL")


def add(node: Node, session: str, kind: str, content: str, parent: str | None = None) -> str:
    with open_trace(node) as trace:
        return trace.append(session_id(trace, session), kind, content, parent)


def finish(node: Node, session: str, conclusion: str) -> str:
    with open_trace(node) as trace:
        return trace.finish(session_id(trace, session), conclusion)


def reopen(node: Node, session: str) -> None:
    with open_trace(node) as trace:
        trace.reopen(session_id(trace, session))


@dataclass(frozen=True)
class SessionView:
    session: str
    steps: list[Step]
    problems: list[Problem]


def show(node: Node, session: str) -> SessionView:
    with open_trace(node) as trace:
        session = session_id(trace, session)
        steps = trace.session_steps(session)
        if not steps:
            raise TraceError(f"There is no session {echo(session, quoted=False)} in {node.layout.trace_db}; "
                             "list goals with `twinsync trace goals` and sessions with `trace query GOAL`.")
        return SessionView(session, steps, coherence_check(trace, session))


def goals(node: Node) -> list[GoalSummary]:
    with open_trace(node) as trace:
        return [g for g in trace.goals() if not g.goal.startswith(DECISION_GOAL_PREFIX)]


@dataclass(frozen=True)
class QueryResult:
    goal: str
    sessions: list[SessionSummary]
    consensus: Consensus
    elapsed_ms: float


def query(node: Node, goal: str) -> QueryResult:
    """Every route toward `goal` and the consensus conclusion; timed, because the seed asks
    for answers within 200 ms."""
    with open_trace(node) as trace:
        started = time.perf_counter()
        sessions = trace.query(goal)
        agreed = consensus(trace, goal)
        elapsed = (time.perf_counter() - started) * 1000
    return QueryResult(goal, sessions, agreed, elapsed)


def forks(node: Node) -> list[ForkView]:
    with open_trace(node) as trace:
        views = [view_fork(trace, f) for f in detect_forks(trace)]
    return [v for v in views if not v.goal.startswith(DECISION_GOAL_PREFIX)]


@dataclass(frozen=True)
class _ForksSeen:
    forks: list[Fork]
    views: list[ForkView]
    mark: TraceMark


class ForkWatch:
    """`forks(node)`, kept up to date as trace.db changes. Finding forks scans the index of
    every step (about 0.7 s for a 1M-step trace), so after a change only the sessions that
    gained steps are looked at again (`TraceMark`); the views are made again every time,
    as a decision recorded in another session changes them, and forks are few. An idle
    trace is read once. The daemon shares one between its alert loop and its fingerprint
    job, so each change of the trace is read once, by whichever thread asks first, while
    the other waits for that answer."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._memo = Memo(node.layout.trace_db)
        self._lock = threading.Lock()

    def __call__(self) -> list[ForkView]:
        with self._lock:
            return self._memo.carry("forks", self._update).views

    def _update(self, seen: _ForksSeen | None) -> _ForksSeen:
        with open_trace(self._node) as trace:
            conn = trace.connection
            conn.execute("BEGIN")  # one snapshot for the mark, the forks and their views
            try:
                now = mark_now(conn)
                touched = touched_since(conn, seen.mark, now) if seen is not None else None
                found = (detect_forks(conn) if touched is None else
                         in_order([*(f for f in seen.forks if f.session not in touched),
                                   *detect_forks(conn, sessions=touched)]))
                views = [view_fork(conn, f) for f in found]
            finally:
                conn.execute("COMMIT")
        return _ForksSeen(found, [v for v in views if not v.goal.startswith(DECISION_GOAL_PREFIX)], now)

    def close(self) -> None:
        with self._lock:
            self._memo.close()


def decide_fork(node: Node, fork: str, branch: str, verdict: str) -> ForkView:
    """Record a signed-by-publication decision step; `fork` and `branch` may be unique prefixes."""
    with open_trace(node) as trace:
        found = {fork_id(f): f for f in detect_forks(trace)}
        f = found[by_prefix(fork, found, what="fork", listing="twinsync forks")]
        chosen = by_prefix(branch, f.branches, what=f"branch of fork {fork_id(f)}", listing="twinsync forks",
                           strip="sha256:")
        record_decision(trace, f, chosen, verdict)
        return view_fork(trace, f)
