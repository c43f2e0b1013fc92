"""Trace services for the CLI and the TUI: record reasoning, read it back, see forks and
decide them. Publishing, merging, snapshots and restore live in orchestrator/recovery.py."""

from __future__ import annotations

import time
from dataclasses import dataclass

from folders.decisions import DECISION_GOAL_PREFIX, ForkView, record_decision, view_fork
from folders.errors import TraceError, echo
from folders.consensus import Consensus, consensus
from folders.forks import detect_forks
from folders.trace import GoalSummary, Problem, SessionSummary, Step, TraceDB, coherence_check
from orchestrator.node import Node


def open_trace(node: Node) -> TraceDB:
    return TraceDB(node.layout.trace_db, node.name)


def start(node: Node, goal: str, content: str | None = None) -> str:
    if not goal.strip() or goal.startswith(DECISION_GOAL_PREFIX):
        raise TraceError(f"Goal {echo(goal)} is not allowed; give a goal in words, e.g. "
                         "'plan the week' (it may not start with 'decision:').")
    with open_trace(node) as trace:
        return trace.start_session(goal, content)


def add(node: Node, session: str, kind: str, content: str, parent: str | None = None) -> str:
    with open_trace(node) as trace:
        return trace.append(session, kind, content, parent)


def finish(node: Node, session: str, conclusion: str) -> str:
    with open_trace(node) as trace:
        return trace.finish(session, conclusion)


def reopen(node: Node, session: str) -> None:
    with open_trace(node) as trace:
        trace.reopen(session)


@dataclass(frozen=True)
class SessionView:
    session: str
    steps: list[Step]
    problems: list[Problem]


def show(node: Node, session: str) -> SessionView:
    with open_trace(node) as trace:
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


def decide_fork(node: Node, fork: str, branch: str, verdict: str) -> ForkView:
    """Record a signed-by-publication decision step; `branch` may be a unique hash prefix."""
    with open_trace(node) as trace:
        for f in detect_forks(trace):
            view = view_fork(trace, f)
            if view.id == fork:
                matches = [b for b in f.branches if b.startswith(branch) or b.removeprefix("sha256:").startswith(branch)]
                if len(matches) != 1:
                    raise TraceError(f"Branch {echo(branch)} matches {len(matches)} branches of fork {echo(fork)}; "
                                     f"give more of its hash (see `twinsync forks`).")
                record_decision(trace, f, matches[0], verdict)
                return view_fork(trace, f)
    raise TraceError(f"There is no fork {echo(fork)}; list them with `twinsync forks`.")
