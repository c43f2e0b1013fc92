"""state.db: the orchestrator's own memory (frame index, conflict queue, events, metrics).

Unlike trace.db it is never published; losing it costs a reconcile pass, not data.
"""

from __future__ import annotations

from pathlib import Path

import sqlite_utils

SCHEMA_VERSION = 1


def open_state(path: Path) -> sqlite_utils.Database:
    db = sqlite_utils.Database(path)
    db.execute("PRAGMA busy_timeout = 5000")
    return db


def ensure_schema(path: Path) -> None:
    """Create the tables, or bring an older state.db up to today's columns (sqlite-utils'
    `transform`); safe and cheap to call whenever a node is opened."""
    db = open_state(path)
    try:
        db.enable_wal()
        db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
        db["meta"].upsert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")
        db["frames"].create(
            {"path": str, "frame_id": str, "hash": str, "size": int, "mtime_ns": int,
             "status": str, "code": str, "updated": str},
            pk="path", transform=True)
        db["conflicts"].create(
            {"id": int, "kind": str, "frame": str, "path": str, "copy_path": str, "device": str,
             "status": str, "reason": str, "branch": str, "ours_hash": str, "theirs_hash": str,
             "ours_author": str, "theirs_author": str, "created": str, "decided_by": str,
             "decided_at": str},
            pk="id", transform=True)
        db["conflicts"].create_index(["status"], if_not_exists=True)
        db["events"].create({"id": int, "ts": str, "kind": str, "message": str},
                            pk="id", if_not_exists=True)
        db["metrics"].create({"ts": str, "name": str, "value": float}, if_not_exists=True)
        db["metrics"].create_index(["name", "ts"], if_not_exists=True)
    finally:
        db.close()
