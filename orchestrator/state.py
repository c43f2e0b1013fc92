"""state.db: the orchestrator's own memory (frame index, conflict queue, events, metrics).

Unlike trace.db it is never published; losing it costs a reconcile pass, not data.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite_utils

#: Bump when a table changes: an older state.db is then brought up to date once.
SCHEMA_VERSION = 5


def stamp(moment: datetime) -> str:
    """How state.db and trusted.toml write a time: UTC, to the second."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def open_state(path: Path) -> sqlite_utils.Database:
    import sqlite_utils  # imported here: a light command (status, --version) never needs it

    db = sqlite_utils.Database(path)
    db.execute("PRAGMA busy_timeout = 5000")
    # sqlite-utils finds out whether SQLite has upsert (3.24+, older than any Python 3.11
    # bundles) by creating and dropping a table in each new Database: two write
    # transactions on state.db, ~20 ms of every `frame put` and every batch, and contention
    # with the daemon. Telling it skips the probe; a later sqlite-utils that names it
    # otherwise only probes again.
    db._supports_on_conflict = True  # noqa: SLF001
    return db


def upsert(conn: sqlite3.Connection, table: str, rows: list[dict], key: str) -> None:
    """Insert rows that all have the same columns, replacing those `key` already names.
    sqlite-utils' upsert_all reads the table's schema first, a dozen statements on the path
    of every frame a peer sends; ours are known. Table and column names are ours, never a
    user's."""
    if not rows:
        return
    columns = list(rows[0])
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                     f"ON CONFLICT({key}) DO UPDATE SET {updates}", [[row[c] for c in columns] for row in rows])


@contextmanager
def write_state(path: Path, through: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
    """One transaction on state.db with plain sqlite3, committed when the block ends. Through
    `through` when given (a connection its owner keeps open: the daemon's fingerprint job
    writes its bookkeeping through the one whose data_version it watches), else through a
    connection opened and closed here."""
    conn = through if through is not None else sqlite3.connect(path, timeout=5)
    try:
        with conn:
            yield conn
    finally:
        if through is None:
            conn.close()


def read_state(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection for a command that only reads: `status` and the metrics
    must not pay for importing sqlite-utils (and the click and pluggy it brings)."""
    conn = sqlite3.connect(path, timeout=5)
    conn.execute("PRAGMA query_only = ON")
    return conn


def _is_current(path: Path) -> bool:
    """The one read, with plain sqlite3; a missing table or any other doubt means "bring it up
    to date", which then reports a real problem."""
    conn = sqlite3.connect(path, timeout=5)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return row is not None and row[0] == str(SCHEMA_VERSION)


def ensure_schema(path: Path) -> bool:
    """Create the tables, or bring an older state.db up to today's columns (sqlite-utils'
    `transform`). Every command opens a node, so a current database costs one read. True
    when the tables were made or changed (what state.db held before may be missing)."""
    if _is_current(path):
        return False
    db = open_state(path)
    try:
        db.enable_wal()
        db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
        db["frames"].create(
            {"path": str, "frame_id": str, "hash": str, "size": int, "mtime_ns": int,
             "status": str, "code": str, "updated": str},
            pk="path", transform=True)
        db["conflicts"].create(
            {"id": int, "kind": str, "frame": str, "path": str, "copy_path": str, "device": str,
             "status": str, "reason": str, "branch": str, "ours_hash": str, "theirs_hash": str,
             "ours_author": str, "theirs_author": str, "created": str, "decided_by": str,
             "decided_at": str, "revision": str, "location": str,
             "ours_created": str, "theirs_created": str},
            pk="id", transform=True)
        db["conflicts"].create_index(["status"], if_not_exists=True)
        # Version 3: quarantined files are open items (they were filed away unseen before).
        with db.conn:
            db.execute("UPDATE conflicts SET status = 'open' WHERE kind = 'quarantined' AND status = 'quarantined'")
        # Version 4: a deleted frame's last version, so an old copy coming back is held (2.x
        # forgets deletions after a while and would bring it back as a new file).
        db["tombstones"].create({"path": str, "frame_id": str, "hash": str, "deleted_at": str,
                                 "deleted_by": str}, pk="path", if_not_exists=True)
        # Version 4: module versions seen here and what a person decided about each.
        db["modules"].create(
            {"id": int, "name": str, "version": str, "hash": str, "author": str, "entry": str,
             "serves": str, "commit_sha": str, "status": str, "code": str, "reason": str,
             "created": str, "decided_by": str, "decided_at": str},
            pk="id", if_not_exists=True)
        db["modules"].create_index(["name", "status"], if_not_exists=True)
        db["events"].create({"id": int, "ts": str, "kind": str, "message": str},
                            pk="id", if_not_exists=True)
        db["metrics"].create({"ts": str, "name": str, "value": float}, if_not_exists=True)
        db["metrics"].create_index(["name", "ts"], if_not_exists=True)
        # Version 5: round trips of asks that peers answered, for the access metric.
        db["asks"].create({"id": int, "ts": str, "peer": str, "ms": float}, pk="id", if_not_exists=True)
        # Last: a version is only recorded once every table matches it.
        db["meta"].upsert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")
        return True
    finally:
        db.close()
