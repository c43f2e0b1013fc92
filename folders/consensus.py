"""trace-consensus: the conclusion most published sessions of a goal reached.

The one rule, written once: a session's conclusion is the `conclusion` step at the end of
its chain, following `forks.choose_branch` at every fork; the winner has the most
sessions behind it, ties going to the smallest sha256 of the conclusion text; routes are
all published sessions of the goal, concluded or not. `tally_goals` applies it to every
goal at once (the metrics) or to one goal (`consensus`, what `trace query` answers).

"Published" (`PUBLISHED`): a session is published unless this node holds a local
`sessions` row whose status is not 'published'; steps merged from peers have no local
row, so they count. Only published sessions count toward consensus; local shadows do not.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain
from typing import NamedTuple

from folders.decisions import DECISION_GOAL_PREFIX
from folders.forks import SessionGraph
from folders.trace import TraceDB, as_connection, content_hash, load_steps
from folders.tracemark import TraceMark, mark_now, reading, touched_since, unpublished

#: Only published sessions leave a node or count toward consensus; local shadows do not.
PUBLISHED = "session NOT IN (SELECT session FROM sessions WHERE status != 'published')"


@dataclass(frozen=True)
class Consensus:
    """trace-consensus for one goal; `routes` counts its published sessions."""

    goal: str
    conclusion: str | None
    supporters: int
    routes: int
    support: float


class GoalTally(NamedTuple):
    """trace-consensus for one goal, with the count convergence needs: `concluded` is how
    many published sessions of the goal have a conclusion."""

    goal: str
    conclusion: str | None
    supporters: int
    concluded: int
    routes: int


#: One row per (goal, session): whether the session forks within the goal, exactly as
#: `detect_forks(db, goal)` groups it. Steps grouped by parent form count(DISTINCT parent)
#: groups, plus one for the roots (NULL parent) if any; a group holds two steps or more
#: exactly when the steps outnumber the groups. For all goals NOT INDEXED: a sequential
#: scan and one sort beat walking the goal index, whose random table reads cost twice as
#: much; for one goal the goal index.
_FORKS = "count(*) > count(DISTINCT parent) + max(parent IS NULL)"
_SESSIONS_ALL = f"SELECT goal, session, {_FORKS} FROM steps NOT INDEXED GROUP BY goal, session"
_SESSIONS_ONE = f"SELECT goal, session, {_FORKS} FROM steps WHERE goal = ? GROUP BY session"
#: Conclusion steps nothing follows: the conclusions of unforked sessions.
_CHILDLESS = "kind = 'conclusion' AND NOT EXISTS (SELECT 1 FROM steps c WHERE c.parent = s.hash)"
_CHILDLESS_ALL = f"SELECT goal, session, content FROM steps s NOT INDEXED WHERE {_CHILDLESS}"
_CHILDLESS_ONE = f"SELECT goal, session, content FROM steps s WHERE goal = ? AND {_CHILDLESS}"
_NEWEST_CHILDLESS = ("SELECT content FROM steps s WHERE goal = ? AND session = ? "
                     f"AND {_CHILDLESS} ORDER BY ts DESC, hash DESC LIMIT 1")


def tally_goals(db: TraceDB | sqlite3.Connection, goal: str | None = None) -> dict[str, GoalTally]:
    """trace-consensus for every goal with a published session (decisions on forks are
    bookkeeping and left out), or for `goal` only, in three queries:

    1. per (goal, session): whether the session is published (`PUBLISHED` is a property
       of the session, so it is applied once per session, from the small set of
       unpublished ones) and whether it forks within the goal, as detect_forks would say;
    2. the conclusion steps nothing follows, kept for published sessions that do not
       fork within their goal; should one have two (only a gap in its chain allows it),
       the newest (by ts, then hash) counts;
    3. published sessions that fork: the end of the chain reached by following
       `choose_branch` at every fork from the root; forks are rare, so this walks them
       one session at a time.

    The reads share one transaction, so a merge committing meanwhile is wholly in or out.
    """
    conn = as_connection(db)
    with reading(conn):
        return _tally(conn, None if goal is None else [goal], unpublished(conn))


@dataclass(frozen=True)
class TallyBook:
    """Every goal's tally (as `tally_goals` gives them) and the trace they were taken at, so
    that `update_tallies` re-tallies only the goals a change can touch."""

    tallies: dict[str, GoalTally]
    mark: TraceMark


#: Past this share of the goals, re-tallying goal by goal (an index walk each) costs more
#: than one pass over every step.
RETALLY_SHARE = 0.25


def update_tallies(db: TraceDB | sqlite3.Connection, book: TallyBook | None = None, *,
                   share: float = RETALLY_SHARE) -> TallyBook:
    """`book` brought up to the trace as it is now, in one read transaction: the goals of
    every session that gained steps or changed between published and not are tallied
    again (a session's steps in all its goals, as a forked session's tip depends on all of
    them). None, a book of another trace, or changes touching more than `share` of the
    goals: tallied whole."""
    conn = as_connection(db)
    with reading(conn):
        now = mark_now(conn)
        if book is not None and book.mark == now:
            return book
        touched = touched_since(conn, book.mark, now) if book is not None else None
        if touched is not None:
            goals = sorted({row[0] for row in conn.execute(
                "SELECT DISTINCT goal FROM steps WHERE session IN (SELECT value FROM json_each(?))",
                [json.dumps(sorted(touched))]) if not row[0].startswith(DECISION_GOAL_PREFIX)})
            if len(goals) <= share * len(book.tallies):
                tallies = {g: t for g, t in book.tallies.items() if g not in goals}
                tallies.update(_tally(conn, goals, now.unpublished))
                return TallyBook(tallies, now)
        return TallyBook(_tally(conn, None, now.unpublished), now)


def _tally(conn: sqlite3.Connection, goals: list[str] | None,
           hidden: frozenset[str]) -> dict[str, GoalTally]:
    """`tally_goals`' rule, for every goal (None; decisions left out) or for `goals`; the
    sessions in `hidden` are not published and do not count."""
    def each(whole: str, one: str) -> Iterable[tuple]:
        if goals is None:
            return conn.execute(whole)
        return chain.from_iterable(conn.execute(one, (g,)) for g in goals)

    routes: Counter[str] = Counter()
    forked: dict[str, set[str]] = defaultdict(set)
    for g, session, forks in each(_SESSIONS_ALL, _SESSIONS_ONE):
        if session not in hidden:
            routes[g] += 1
            if forks:
                forked[g].add(session)
    conclusions: dict[tuple[str, str], str] = {}
    repeated = set()
    for g, session, content in each(_CHILDLESS_ALL, _CHILDLESS_ONE):
        if session in hidden or session in forked.get(g, ()):
            continue
        if (g, session) in conclusions:
            repeated.add((g, session))
        conclusions[g, session] = content
    for g, session in repeated:
        conclusions[g, session] = conn.execute(_NEWEST_CHILDLESS, (g, session)).fetchone()[0]
    for g, sessions in forked.items():
        for session in sessions:
            tip = SessionGraph(load_steps(conn, session)).resolved_tip()
            if tip is not None and tip.kind == "conclusion":
                conclusions[g, session] = tip.content
    by_goal: dict[str, Counter[str]] = defaultdict(Counter)
    for (g, _), content in conclusions.items():
        by_goal[g][content] += 1
    tallies = {}
    for g, count in routes.items():
        if goals is None and g.startswith(DECISION_GOAL_PREFIX):
            continue
        tally = by_goal.get(g)
        if not tally:
            tallies[g] = GoalTally(g, None, 0, 0, count)
            continue
        winner, supporters = min(tally.items(), key=lambda item: (-item[1], content_hash(item[0])))
        tallies[g] = GoalTally(g, winner, supporters, sum(tally.values()), count)
    return tallies


def consensus(db: TraceDB | sqlite3.Connection, goal: str) -> Consensus:
    """The conclusion most published sessions of `goal` reached; `support` = supporters /
    routes."""
    tally = tally_goals(db, goal).get(goal)
    if tally is None:
        return Consensus(goal, None, 0, 0, 0.0)
    support = tally.supporters / tally.routes if tally.supporters else 0.0
    return Consensus(goal, tally.conclusion, tally.supporters, tally.routes, support)
