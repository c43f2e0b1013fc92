"""Restore: trace.db replaced by a verified snapshot, never in place (DESIGN §3 flow 6).

The snapshot is read once: copied into `trace.db.tmp` while its bytes are hashed, so the
signed sha256 proves exactly what the copy holds, and every other check (SQLite's
integrity_check unless the node's own signature says it passed before signing, the
schema, the row count, every step's hash, the authors) runs on that copy, which nothing
else writes. The copy is then made this node's (the local tables, and
for a new machine the dead node's log turned into merged seqs), given back this node's
unpublished shadow sessions from the old trace.db, and only then is the old trace.db moved
aside as `trace.db.bak-<utc>` and the copy renamed into place. Any failure before that
leaves trace.db untouched.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from folders.errors import TraceError
from folders.files import fsync_dir
from folders.manifest import SegmentError, check_signed_file
from folders.snapshots import (INTEGRITY_CHECKED, VerifiedSnapshot, check_snapshot_db, read_snapshot_manifest,
                               sidecar, snapshot_stamp)
from folders.stepsfile import COLUMNS, map_private_copy, readonly_uri
from folders.trace import Clock, connect, ensure_schema, format_ts, utc_now, write_transaction

#: Bytes copied per step of a restore (and per progress report): large reads let hashlib
#: hash without the GIL and keep the system calls few.
COPY_CHUNK = 8 << 20

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Restored:
    """What `restore_snapshot` put in place, and where the old trace.db was kept (None when
    there was none)."""

    snapshot: VerifiedSnapshot
    backup: Path | None


def restore_snapshot(trace_db_path: Path, manifest_path: Path, trusted: Mapping[str, Ed25519PublicKey],
                     clock: Clock = utc_now, progress: Progress | None = None, *,
                     node: str | None = None, new_machine: bool = False,
                     chunk: int = COPY_CHUNK, workers: int = 1) -> Restored:
    """Verify a snapshot and replace trace.db by it; never in place.

    The snapshot's .db is copied into `trace.db.tmp` (`chunk` bytes at a time, reporting
    `progress(done_bytes, total_bytes)`), hashed as it is written and checked there, made
    this node's, and only then is the old trace.db (with its -wal and -shm) moved aside as
    `trace.db.bak-<utc>` and the copy renamed into place. Any failure before that leaves
    trace.db untouched and no `trace.db.tmp`.

    `node` is the node that will own trace.db, by default the snapshot's; a snapshot of
    another node is refused unless `new_machine`, which restores onto a new machine: the
    restored steps keep their authors, the dead node's publish log and sessions are
    dropped (the new node publishes from seq 1 and never takes them for its own work),
    and `merged` records the dead node up to the snapshot's seq, so its newer segments can
    still be merged. Afterwards run the merge plan, so every segment newer than the
    snapshot is merged again.

    This node's shadow sessions (open, or finished and not yet published) in the old
    trace.db come back as shadows on top of the restored trace; when the old trace.db
    cannot be read they stay in the backup (`shadow_sessions` counts them beforehand).

    `workers`: processes that recompute the step hashes (the CLI gives one per core).
    """
    target = Path(trace_db_path)
    manifest_path = Path(manifest_path)
    tmp = target.with_name(target.name + ".tmp")
    try:
        _remove_db_files(tmp)
        try:
            verified = _verify_into(manifest_path, trusted, tmp, progress, chunk, node, workers)
            owner = verified.node if node is None else node
            if owner != verified.node and not new_machine:
                raise TraceError(f"Snapshot {manifest_path.name} is {verified.node}'s, not {owner}'s; "
                                 "restore it as a new machine to take over its published trace.")
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
    return Restored(verified, backup)


def _verify_into(manifest_path: Path, trusted: Mapping[str, Ed25519PublicKey], tmp: Path,
                 progress: Progress | None, chunk: int, node: str | None, workers: int) -> VerifiedSnapshot:
    """Copy the snapshot into `tmp` and verify the copy: the signed sha256 is checked over
    the bytes as they were written, then every other check runs on them.

    A restore keeps the snapshot's indexes, so they must match their tables: SQLite's
    integrity_check proves it (10 s for 1 GB here). A node's own snapshot whose manifest
    says it was integrity-checked before it was signed skips it: these are the bytes that
    passed, and this node's key vouches for the check. Any other snapshot is checked here,
    in C on a second thread beside the step hashes, with the copy's fsync."""
    manifest = read_snapshot_manifest(manifest_path)
    vouched = manifest.get(INTEGRITY_CHECKED) is True and node in (None, manifest["node"])
    source = check_signed_file(manifest_path, manifest, trusted, "Snapshot", "snapshot again",
                               digest=lambda path: _copy_hashing(path, tmp, progress, chunk))
    checker = sqlite3.connect(readonly_uri(tmp), uri=True, check_same_thread=False)
    try:
        map_private_copy(checker)
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="restore-check") as beside:
            flushed = beside.submit(fsync_dir, tmp)
            indexes = None if vouched else beside.submit(
                lambda: [row[0] for row in checker.execute("PRAGMA integrity_check")])
            try:
                # integrity_check takes a core of its own; the step hashes get the rest
                verified = check_snapshot_db(manifest_path, manifest, source, copy=tmp,
                                             workers=workers if vouched else max(1, workers - 1))
            except BaseException:
                checker.interrupt()  # refused already: do not wait for the rest of the check
                raise
            try:
                check = ["ok"] if indexes is None else indexes.result()
            except sqlite3.DatabaseError as exc:
                check = [str(exc)]
            flushed.result()
    finally:
        checker.close()
    if check != ["ok"]:
        raise SegmentError("corrupt_db", f"Snapshot {source} fails SQLite's integrity_check "
                           f"({check[0]}); remove it and ask {verified.node} to snapshot again.")
    return verified


def _copy_hashing(source: Path, dest: Path, progress: Progress | None, chunk: int) -> str:
    """Copy `source` into a new file `dest`; the sha256 of exactly the bytes written.

    A read error is an OSError (the caller says the snapshot cannot be read yet), a write
    error a TraceError naming `dest`. Opened without following links and never blocking,
    and refused unless a regular file, like `file_sha256`."""
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{source} is not a regular file")
        try:
            out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise TraceError(f"Cannot create {dest} ({exc.strerror}); fix the permissions of its "
                             "folder, then restore again.") from None
        try:
            digest = hashlib.sha256()
            buffers = (bytearray(max(1, chunk)), bytearray(max(1, chunk)))
            done, k, written = 0, 0, None
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore-write") as writer:
                # Chunk k is written on the second core while it is hashed here (both release
                # the GIL), then chunk k-1's write is awaited, so the next read never fills
                # a buffer that is still being written.
                while n := os.readv(fd, [buffers[k % 2]]):
                    view = memoryview(buffers[k % 2])[:n]
                    writing = writer.submit(_write_all, out, view, dest)
                    digest.update(view)
                    if written is not None:
                        written.result()
                    written = writing
                    done, k = done + n, k + 1
                    if progress is not None:
                        progress(done, max(done, st.st_size))
                if written is not None:
                    written.result()
            return digest.hexdigest()
        finally:
            os.close(out)
    finally:
        os.close(fd)


def _write_all(fd: int, data: memoryview, dest: Path) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError as exc:
        raise TraceError(f"Cannot write {dest} ({exc.strerror}); free some disk space or fix the "
                         "permissions of its folder, then restore again.") from None


def _is_disk_error(exc: sqlite3.DatabaseError) -> bool:
    """Our side failed (full, read-only, cannot create), not the snapshot's content."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_READONLY",
                            "SQLITE_PERM"))


def _adopt(tmp: Path, verified: VerifiedSnapshot, owner: str, clock: Clock) -> None:
    """Make the verified copy `owner`'s trace.db."""
    conn = connect(tmp)
    try:
        with write_transaction(conn):
            if owner != verified.node:
                conn.execute("INSERT OR IGNORE INTO merged (node, seq, sha256, rows, merged) "
                             "SELECT ?, seq, sha256, rows, ? FROM publish_log",
                             (verified.node, format_ts(clock())))
                conn.execute("DELETE FROM publish_log")
                conn.execute("DELETE FROM sessions")
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


