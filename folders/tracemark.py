"""TraceMark: where a trace was when something was computed from every step of it, so that
the next computation can redo only the sessions that changed since (a merged peer session
touches a handful; computing over 1M steps again takes seconds).

Steps are only ever added to a trace.db (a restore replaces the file), so the highest rowid
marks what was seen; the step count and the hash at that rowid catch a file that was
replaced or lost steps, and the caller then computes whole again. A session also changes
for the rules when it moves between published and not (`consensus.PUBLISHED`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class TraceMark:
    upto: int
    tail: str | None
    steps: int
    unpublished: frozenset[str]


def mark_now(conn: sqlite3.Connection) -> TraceMark:
    """The trace as the caller's read transaction sees it."""
    upto, tail = conn.execute("SELECT rowid, hash FROM steps ORDER BY rowid DESC LIMIT 1").fetchone() or (0, None)
    steps = conn.execute("SELECT count(*) FROM steps").fetchone()[0]
    return TraceMark(upto, tail, steps, unpublished(conn))


def unpublished(conn: sqlite3.Connection) -> frozenset[str]:
    """This node's sessions that are not published (yet): a handful, read from `sessions`."""
    return frozenset(row[0] for row in conn.execute("SELECT session FROM sessions WHERE status != 'published'"))


def added_since(conn: sqlite3.Connection, before: TraceMark, now: TraceMark) -> set[str] | None:
    """Sessions that gained steps from `before` to `now` (read in the same transaction as
    `now`); None when the trace is not `before`'s plus new steps, so everything must be
    computed again."""
    if now.upto < before.upto:
        return None
    added = conn.execute("SELECT count(*) FROM steps WHERE rowid > ?", (before.upto,)).fetchone()[0]
    tail = conn.execute("SELECT hash FROM steps WHERE rowid = ?", (before.upto,)).fetchone()
    if now.steps != before.steps + added or tail != ((before.tail,) if before.upto else None):
        return None
    # Not DISTINCT in SQL: the planner would walk the whole session index for it.
    return {row[0] for row in conn.execute("SELECT session FROM steps WHERE rowid > ?", (before.upto,))}


def touched_since(conn: sqlite3.Connection, before: TraceMark, now: TraceMark) -> set[str] | None:
    """`added_since`, and the sessions that moved between published and not."""
    added = added_since(conn, before, now)
    return None if added is None else added | (now.unpublished ^ before.unpublished)


@contextmanager
def reading(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction, so a mark and what is read with it are one snapshot of the
    trace; a caller's transaction, when it holds one, is that snapshot already."""
    own_transaction = not conn.in_transaction
    if own_transaction:
        conn.execute("BEGIN")
    try:
        yield
    finally:
        if own_transaction:
            conn.execute("COMMIT")
