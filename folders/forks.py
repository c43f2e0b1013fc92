"""Forks (fr_conflict_resolver's input) and the branch trace-consensus picks at each one.

A fork is two steps of one session with the same parent: a node restored from an old
snapshot and went on, say. Both branches are kept; `choose_branch` picks one by a rule
that is a pure function of the steps, so every node holding the same steps picks the
same branch without talking, and a person may confirm or override it (folders/decisions).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from folders.errors import TraceError, echo
from folders.trace import Step, TraceDB, as_connection, load_steps


@dataclass(frozen=True)
class Fork:
    """Steps of one session that share a parent (`None`: several roots).

    `branches` are the first steps of each branch, the children of `parent`, sorted.
    """

    session: str
    parent: str | None
    branches: tuple[str, ...]


def detect_forks(db: TraceDB | sqlite3.Connection, goal: str | None = None,
                 sessions: Collection[str] | None = None) -> list[Fork]:
    """fr_conflict_resolver's input: every place where a session stops being one chain, in
    the whole trace, in `goal`, or in `sessions` (the daemon's `ForkWatch` looks again only
    at the sessions a change touched).

    The fork points are found on the (session, parent) index alone, and only their steps
    are read for their hashes: grouping every step with its hash read each of a 1M-step
    trace's rows (2.1–2.6 s against 0.65–0.8 s), and the daemon looks after every change
    of the trace. One statement, so one snapshot of the trace."""
    where: dict[str, str] = {}  # condition -> its argument
    if goal is not None:
        where["goal = ?"] = goal
    if sessions is not None:
        where["session IN (SELECT value FROM json_each(?))"] = json.dumps(sorted(sessions))
    on = "AND s.goal = ?" if goal is not None else ""
    rows = as_connection(db).execute(
        f"WITH forked AS (SELECT session, parent FROM steps {'WHERE ' + ' AND '.join(where) if where else ''} "
        "GROUP BY session, parent HAVING count(*) > 1) "
        "SELECT f.session, f.parent, group_concat(s.hash, ' ') FROM forked f JOIN steps s "
        f"ON s.session = f.session AND s.parent IS f.parent {on} GROUP BY f.session, f.parent",
        [*where.values(), *([goal] if goal is not None else [])])
    return in_order(Fork(session, parent, tuple(sorted(hashes.split(" ")))) for session, parent, hashes in rows)


def in_order(forks: Iterable[Fork]) -> list[Fork]:
    """Forks as `detect_forks` lists them."""
    return sorted(forks, key=lambda f: (f.session, f.parent or "", f.branches))


class SessionGraph:
    """One session's steps as a tree, for walking branches without going back to SQL."""

    def __init__(self, steps: list[Step]) -> None:
        self.by_hash = {step.hash: step for step in steps}
        self.children: dict[str | None, list[Step]] = {}
        for step in steps:
            self.children.setdefault(step.parent, []).append(step)

    def choose(self, branches: tuple[str, ...]) -> str:
        return min(branches, key=self._rank)

    def _rank(self, branch: str) -> tuple[int, int, str]:
        subtree = self._subtree(branch)
        authors = len({step.author for step in subtree})
        return (-authors, -self._coherent_length(branch), branch)

    def _subtree(self, start: str) -> list[Step]:
        found, todo, seen = [], [self.by_hash[start]], set()
        while todo:
            step = todo.pop()
            if step.hash in seen:
                continue
            seen.add(step.hash)
            found.append(step)
            todo.extend(self.children.get(step.hash, ()))
        return found

    def _coherent_length(self, start: str) -> int:
        """Steps on the longest path down from `start` whose hashes recompute and times rise."""
        first = self.by_hash[start]
        if not first.recomputes():
            return 0
        order, todo = [], [first]
        while todo:
            step = todo.pop()
            order.append(step)
            todo.extend(child for child in self.children.get(step.hash, ())
                        if child.ts >= step.ts and child.recomputes())
        length: dict[str, int] = {}
        for step in reversed(order):
            below = [length[c.hash] for c in self.children.get(step.hash, ()) if c.hash in length]
            length[step.hash] = 1 + max(below, default=0)
        return length[start]

    def resolved_tip(self) -> Step | None:
        """Follow the chosen branch at every fork, from the root to the end of the chain."""
        current, seen = self.children.get(None), set()
        while current:
            step = (current[0] if len(current) == 1 else
                    self.by_hash[self.choose(tuple(sorted(c.hash for c in current)))])
            if step.hash in seen:  # only a forged cycle gets here; hashes rule it out otherwise
                return None
            seen.add(step.hash)
            current = self.children.get(step.hash)
            if not current:
                return step
        return None


def choose_branch(db: TraceDB | sqlite3.Connection, fork: Fork) -> str:
    """trace-consensus: the branch every node picks for `fork`, from the steps alone.

    Rule, in order: (1) the branch endorsed by the most distinct authors (authors of any
    step in the branch, its first step and everything after it); (2) then the branch with
    the longest coherent chain (steps whose hashes recompute and whose times never go
    back, counted down the longest path); (3) then the smallest hash of the branch's
    first step. Returns that first step's hash.
    """
    graph = SessionGraph(load_steps(db, fork.session))
    missing = [b for b in fork.branches if b not in graph.by_hash]
    if missing or not fork.branches:
        raise TraceError(f"Fork of session {echo(fork.session, quoted=False)} names steps not in trace.db "
                         f"({echo(', '.join(missing) or 'no branches', quoted=False)}); detect forks again.")
    return graph.choose(fork.branches)
