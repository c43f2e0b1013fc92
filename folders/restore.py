"""Restore: trace.db replaced by a verified snapshot, never in place (DESIGN §3 flow 6).

The snapshot is copied into `trace.db.tmp` with SQLite's online backup, made this node's
(the local tables, and for a new machine the dead node's log turned into merged seqs),
given back this node's unpublished shadow sessions from the old trace.db, checked from end
to end, and only then is the old trace.db moved aside as `trace.db.bak-<utc>` and the copy
renamed into place. Any failure before that leaves trace.db untouched.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from folders.errors import TraceError
from folders.files import fsync_dir
from folders.manifest import SegmentError, file_sha256
from folders.snapshots import VerifiedSnapshot, sidecar, snapshot_stamp
from folders.stepsfile import COLUMNS, readonly_uri
from folders.trace import Clock, connect, ensure_schema, format_ts, utc_now, write_transaction

#: Pages copied per step of a restore: 1 MiB at SQLite's default 4 KiB page size.
PAGES_PER_STEP = 256

Progress = Callable[[int, int], None]


def restore_snapshot(trace_db_path: Path, verified: VerifiedSnapshot, clock: Clock = utc_now,
                     progress: Progress | None = None, *, node: str | None = None,
                     pages_per_step: int = PAGES_PER_STEP) -> Path | None:
    """Replace trace.db by a verified snapshot; returns where the old trace.db was kept.

    Never in place: the snapshot is copied into `trace.db.tmp` (online backup,
    `pages_per_step` pages at a time, reporting `progress(done_pages, total_pages)`),
    given the local tables, integrity-checked, and only then is the old trace.db (with
    its -wal and -shm) moved aside as `trace.db.bak-<utc>` and the copy renamed into
    place. Any failure before that leaves trace.db untouched and no `trace.db.tmp`.
    Returns None when there was no trace.db to keep.

    `node` is the node that will own trace.db, by default the snapshot's. Another name
    restores onto a new machine: the restored steps keep their authors, the dead node's
    publish log and sessions are dropped (the new node publishes from seq 1 and never
    takes them for its own work), and `merged` records the dead node up to the
    snapshot's seq, so its newer segments can still be merged. Afterwards run the merge
    plan, so every segment newer than the snapshot is merged again.

    This node's shadow sessions (open, or finished and not yet published) in the old
    trace.db come back as shadows on top of the restored trace; when the old trace.db
    cannot be read they stay in the backup (`shadow_sessions` counts them beforehand).
    """
    target = Path(trace_db_path)
    owner = verified.node if node is None else node
    tmp = target.with_name(target.name + ".tmp")
    try:
        _remove_db_files(tmp)
        try:
            _copy_snapshot(verified, tmp, progress, pages_per_step)
            ensure_schema(tmp)
            _adopt(tmp, verified, owner, clock)
            _carry_shadows(tmp, target, owner)
            fsync_dir(tmp)  # open read-only and fsync: works on a file too
            _checkpoint_or_refuse(target)
            backup = _move_aside(target, clock)
            tmp.replace(target)
        except BaseException:
            _remove_db_files(tmp)
            raise
        fsync_dir(target.parent)
    except OSError as exc:
        raise TraceError(f"Cannot restore {target} ({exc}); check that its folder exists and is "
                         "writable, then restore again.") from None
    return backup


def _copy_snapshot(verified: VerifiedSnapshot, tmp: Path, progress: Progress | None,
                   pages_per_step: int) -> None:
    """Online backup of exactly the verified file: same sha256 before, same inode after."""
    source = verified.db_path
    try:
        before = _identity(source)
        same = file_sha256(source) == verified.sha256
    except OSError:
        raise SegmentError("missing_file", f"Snapshot {source} is gone since it was verified; "
                           "list the snapshots again and pick one that is here.") from None
    if not same:
        raise SegmentError("sha_mismatch", f"Snapshot {source} changed since it was verified; "
                           "verify it again before restoring.")
    reported = [0]

    def step(_status: int, remaining: int, total: int) -> None:
        done = total - remaining
        if progress is not None and done > reported[0]:
            reported[0] = done
            progress(done, total)

    try:
        src = sqlite3.connect(readonly_uri(source), uri=True)
    except sqlite3.DatabaseError as exc:
        raise SegmentError("corrupt_db", f"Snapshot {source} cannot be opened ({exc}); verify "
                           "it again, or pick another snapshot.") from None
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst, pages=max(1, pages_per_step), progress=step)
        finally:
            dst.close()
    except sqlite3.DatabaseError as exc:
        if _is_disk_error(exc):
            raise TraceError(f"Cannot write {tmp} ({exc}); free some disk space or fix the "
                             "permissions of its folder, then restore again.") from None
        raise SegmentError("corrupt_db", f"Snapshot {source} cannot be copied ({exc}); verify "
                           "it again, or pick another snapshot.") from None
    finally:
        src.close()
    try:
        after = _identity(source)
    except OSError:
        after = None
    if after != before:
        raise SegmentError("sha_mismatch", f"Snapshot {source} changed while it was copied; "
                           "verify it again before restoring.")


def _is_disk_error(exc: sqlite3.DatabaseError) -> bool:
    """Our side failed (full, read-only, cannot create), not the snapshot's content."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_READONLY",
                            "SQLITE_PERM"))


def _identity(path: Path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _adopt(tmp: Path, verified: VerifiedSnapshot, owner: str, clock: Clock) -> None:
    """Make the copy `owner`'s trace.db, then check it from end to end."""
    conn = connect(tmp)
    try:
        with write_transaction(conn):
            if owner != verified.node:
                conn.execute("INSERT OR IGNORE INTO merged (node, seq, sha256, rows, merged) "
                             "SELECT ?, seq, sha256, rows, ? FROM publish_log",
                             (verified.node, format_ts(clock())))
                conn.execute("DELETE FROM publish_log")
                conn.execute("DELETE FROM sessions")
        check = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        if check != ["ok"]:
            raise SegmentError("corrupt_db", f"The copy of snapshot {verified.db_path} fails "
                               f"SQLite's integrity_check ({check[0]}); pick another snapshot.")
        rows = conn.execute("SELECT count(*) FROM steps").fetchone()[0]
        if rows != verified.rows:
            raise SegmentError("row_count", f"The copy of snapshot {verified.db_path} holds {rows} "
                               f"steps, its manifest says {verified.rows}; verify it again.")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.DatabaseError as exc:
        if _is_disk_error(exc):
            raise TraceError(f"Cannot write {tmp} ({exc}); free some disk space, then restore "
                             "again.") from None
        raise SegmentError("corrupt_db", f"The copy of snapshot {verified.db_path} cannot be "
                           f"prepared ({exc}); pick another snapshot.") from None
    finally:
        conn.close()
    wal = sidecar(tmp, "-wal")
    if wal.exists() and wal.stat().st_size:
        raise TraceError(f"{wal} still holds changes after its last connection closed; make "
                         "sure nothing else opened it, then restore again.")
    for side in ("-wal", "-shm"):
        sidecar(tmp, side).unlink(missing_ok=True)


def shadow_sessions(trace_db_path: Path, owner: str) -> int:
    """How many of `owner`'s sessions in trace.db are shadows (not published yet)."""
    conn = connect(trace_db_path)
    try:
        return conn.execute("SELECT count(*) FROM sessions WHERE status != 'published' AND "
                            "author = ?", (owner,)).fetchone()[0]
    finally:
        conn.close()


def _carry_shadows(tmp: Path, old: Path, owner: str) -> None:
    """`owner`'s shadow sessions and their steps, from the old trace.db into the copy.

    Steps are content-addressed, so those already in the snapshot are skipped; a session
    the snapshot holds as published but reopened since comes back open, as it was. An
    old trace.db that cannot be read keeps its shadows in the backup."""
    if not old.is_file():
        return
    conn = connect(tmp)
    try:
        try:
            conn.execute("ATTACH DATABASE ? AS old", (Path(old).resolve().as_uri() + "?mode=ro",))
        except sqlite3.DatabaseError:
            return
        try:
            with write_transaction(conn):
                shadows = ("SELECT session FROM old.sessions WHERE status != 'published' "
                           "AND author = ?")
                conn.execute(f"INSERT OR IGNORE INTO main.steps ({COLUMNS}) SELECT {COLUMNS} "
                             f"FROM old.steps WHERE session IN ({shadows})", (owner,))
                conn.execute(f"INSERT OR REPLACE INTO main.sessions SELECT * FROM old.sessions "
                             f"WHERE session IN ({shadows})", (owner,))
        except sqlite3.DatabaseError:
            pass  # unreadable: the shadows stay in the backup, and the caller says so
        finally:
            conn.execute("DETACH DATABASE old")
    finally:
        conn.close()


def _checkpoint_or_refuse(target: Path) -> None:
    """Fold the old WAL into trace.db; refuse when another process is using it."""
    if not target.exists():
        return
    try:
        conn = sqlite3.connect(target, timeout=1.0)
        try:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            busy = 1
        else:
            return  # unreadable: it is moved aside as it is, with its -wal
    if busy:
        raise TraceError(f"{target} is in use by another process; stop the twinsync daemon, "
                         "then restore again.")


def _move_aside(target: Path, clock: Clock) -> Path | None:
    """trace.db (hard-linked, so the name never goes missing) and its -wal/-shm → .bak-<utc>."""
    sides = [p for p in (sidecar(target, "-wal"), sidecar(target, "-shm")) if p.exists()]
    if not target.exists() and not sides:
        return None
    moment = clock()
    backup = target.with_name(f"{target.name}.bak-{snapshot_stamp(moment)}")
    while any(p.exists() for p in (backup, sidecar(backup, "-wal"), sidecar(backup, "-shm"))):
        moment += timedelta(microseconds=1)
        backup = target.with_name(f"{target.name}.bak-{snapshot_stamp(moment)}")
    kept = None
    if target.exists():
        try:
            os.link(target, backup)
        except OSError:
            target.rename(backup)
        kept = backup
    for side in sides:
        side.rename(sidecar(backup, side.name[len(target.name):]))
    fsync_dir(target.parent)
    return kept


def _remove_db_files(path: Path) -> None:
    for p in (path, sidecar(path, "-wal"), sidecar(path, "-shm"), sidecar(path, "-journal")):
        p.unlink(missing_ok=True)


