"""Snapshots: a node's whole published trace in one signed SQLite file (DESIGN §2, §3 flows 3, 6).

Layout, per node, in its own recovery folder (send-only at its owner):

    trace/recovery/<node>/segments/seg-<first>-<last>.db|json     from `segments.publish`
    trace/recovery/<node>/snapshots/snap-<YYYYMMDDTHHMMSSffffffZ>.db|json

A snapshot is made with SQLite's online backup, then trimmed to what may leave the node:

- kept: `steps` of published sessions (the node's own and everything merged from peers),
  the `sessions` rows of published sessions, `publish_log` (so a node restored from its
  own snapshot never numbers a segment again with a seq its peers already merged) and
  `merged` (which peer segments it holds, so a restore knows which segments are newer);
- removed: shadow sessions (open or finished but not published) and their steps, steps
  of authors that are neither the node nor a node in `merged` (they came by no signed
  path), and any other table, view or trigger (local state never leaves the node).

The manifest is written last: `{"twinsync": 1, "kind": "snapshot", "node", "file",
"sha256", "rows", "created", "seq", "merged": {peer: seq}, "sig"}`; `seq` is the node's
last segment whose steps the snapshot holds, `merged` the same for each peer.

A peer that fell behind (the segments it needs were pruned) catches up with
`merge_snapshot`, a union like `merge_segment` that also records the seqs the snapshot
covers, so the next segments continue the sequence. `restore_snapshot` replaces trace.db
by a copy of a snapshot, keeping the old file aside; with another `node` it seeds a new
machine that replaces a dead one.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from folders.errors import TraceError
from folders.files import fsync_dir, temp_path_for, write_atomic
from folders.layout import NODE_NAME_RE
from folders.segments import (
    COLUMNS,
    HASHED,
    SHA256_RE,
    SegmentError,
    add_step_hash_function,
    check_signed_file,
    check_steps_db,
    file_sha256,
    load_manifest,
    manifest_bytes,
    readonly_uri,
    sign_manifest,
    steps_schema_ok,
)
from folders.trace import (
    SCHEMA_VERSION,
    Clock,
    connect,
    ensure_schema,
    format_ts,
    parse_ts,
    utc_now,
    write_transaction,
)

MANIFEST_VERSION = 1
MANIFEST_KEYS = frozenset(
    {"twinsync", "kind", "node", "file", "sha256", "rows", "created", "seq", "merged", "sig"})
SEGMENTS_DIR = "segments"
SNAPSHOTS_DIR = "snapshots"
SNAPSHOT_FILE_RE = re.compile(r"^snap-\d{8}T\d{12}Z\.db$")
#: The tables a snapshot carries; everything else in trace.db is local to the node.
KEPT_TABLES = ("steps", "sessions", "publish_log", "merged")
#: Columns of the kept tables that restore and merge read (steps is checked exactly).
REQUIRED_COLUMNS = {"sessions": {"session", "author", "status"},
                    "publish_log": {"seq", "sha256"},
                    "merged": {"node", "seq", "sha256", "rows", "merged"}}
#: Pages copied per step of a restore: 1 MiB at SQLite's default 4 KiB page size.
PAGES_PER_STEP = 256

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Snapshot:
    """What `make_snapshot` wrote."""

    node: str
    path: Path
    manifest_path: Path
    created: str
    rows: int
    seq: int
    size: int
    sha256: str
    merged: Mapping[str, int]


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot as its manifest describes it; nothing was verified. `size` is None while
    the .db has not arrived."""

    node: str
    created: str
    seq: int
    rows: int
    merged: Mapping[str, int]
    sha256: str
    db_path: Path
    manifest_path: Path
    size: int | None


@dataclass(frozen=True)
class VerifiedSnapshot:
    """A snapshot whose every check passed; only `verify_snapshot` should make one."""

    node: str
    seq: int
    rows: int
    sha256: str
    created: str
    merged: Mapping[str, int]
    db_path: Path
    manifest_path: Path
    size: int


# --- make -------------------------------------------------------------------------------------

def snapshot_stamp(moment: datetime) -> str:
    """`YYYYMMDDTHHMMSSffffffZ`: sorts like the instant it names."""
    format_ts(moment)  # refuses a naive datetime with the usual message
    return moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def make_snapshot(trace_db_path: Path, out_dir: Path, node: str, key: Ed25519PrivateKey,
                  clock: Clock = utc_now) -> Snapshot:
    """Snapshot `node`'s published trace into `out_dir` (its `snapshots/` folder).

    The copy is made in a `.twinsync-tmp-` file that Syncthing ignores, trimmed, vacuumed,
    fsynced and renamed; the signed manifest is written after it, so a peer never reads
    a manifest whose .db is incomplete.
    """
    trace_db_path, out_dir = Path(trace_db_path), Path(out_dir)
    moment = clock()
    created = format_ts(moment)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        db_path = out_dir / f"snap-{snapshot_stamp(moment)}.db"
        while db_path.exists() or db_path.with_suffix(".json").exists():
            moment += timedelta(microseconds=1)
            db_path = out_dir / f"snap-{snapshot_stamp(moment)}.db"
        tmp = temp_path_for(db_path)
        try:
            source = connect(trace_db_path)
            try:
                copy = sqlite3.connect(tmp, isolation_level=None)
                try:
                    source.backup(copy)
                    seq, merged, rows = _trim(copy, node)
                finally:
                    copy.close()
            finally:
                source.close()
            _fsync_file(tmp)
            tmp.replace(db_path)
        finally:
            for leftover in (tmp, _sidecar(tmp, "-journal")):
                leftover.unlink(missing_ok=True)
        fsync_dir(out_dir)
        digest = file_sha256(db_path)
        manifest = sign_manifest({
            "twinsync": MANIFEST_VERSION, "kind": "snapshot", "node": node,
            "file": db_path.name, "sha256": digest, "rows": rows, "created": created,
            "seq": seq, "merged": merged}, key)
        manifest_path = db_path.with_suffix(".json")
        write_atomic(manifest_path, manifest_bytes(manifest))
        size = db_path.stat().st_size
    except (OSError, sqlite3.DatabaseError) as exc:
        raise TraceError(f"Cannot snapshot {trace_db_path} into {out_dir} ({exc}); check the "
                         "disk space and permissions, then snapshot again.") from None
    return Snapshot(node, db_path, manifest_path, created, rows, seq, size, digest, merged)


def _trim(copy: sqlite3.Connection, node: str) -> tuple[int, dict[str, int], int]:
    """Keep only what may leave the node; returns (seq, merged, rows) of what is left."""
    copy.execute("PRAGMA journal_mode=OFF")  # a scratch copy: a crash throws it away anyway
    copy.execute("BEGIN")
    for kind, name in copy.execute(
            "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view', 'trigger') "
            "AND name NOT LIKE 'sqlite!_%' ESCAPE '!'").fetchall():
        if kind != "table" or name not in KEPT_TABLES:
            quoted = name.replace('"', '""')
            copy.execute(f'DROP {kind.upper()} IF EXISTS "{quoted}"')
    copy.execute("DELETE FROM steps WHERE session IN "
                 "(SELECT session FROM sessions WHERE status != 'published')")
    copy.execute("DELETE FROM sessions WHERE status != 'published'")
    copy.execute("DELETE FROM steps WHERE author != ? AND author NOT IN (SELECT node FROM merged)",
                 (node,))
    copy.execute("COMMIT")
    seq, merged = _coverage(copy, "main", node)
    rows = copy.execute("SELECT count(*) FROM steps").fetchone()[0]
    copy.execute("VACUUM")
    return seq, merged, rows


def _coverage(conn: sqlite3.Connection, schema: str, node: str) -> tuple[int, dict[str, int]]:
    """The node's last segment seq whose steps the db holds, and each peer's."""
    seq = conn.execute(
        f"SELECT max(seq) FROM (SELECT seq FROM {schema}.publish_log UNION ALL "
        f"SELECT seq FROM {schema}.merged WHERE node = ?)", (node,)).fetchone()[0]
    merged = dict(conn.execute(f"SELECT node, max(seq) FROM {schema}.merged WHERE node != ? "
                               "GROUP BY node ORDER BY node", (node,)))
    return seq or 0, merged


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sidecar(db: Path, suffix: str) -> Path:
    return db.with_name(db.name + suffix)


# --- list and verify --------------------------------------------------------------------------

def list_snapshots(recovery_root: Path, node: str | None = None) -> list[SnapshotInfo]:
    """Snapshots under `recovery_root` (all nodes, or one), newest first, from their manifests.

    Cheap: nothing is hashed or opened. A manifest that cannot be read is left out; it is
    refused with its reason when someone verifies it.
    """
    recovery_root = Path(recovery_root)
    folders = [recovery_root / node] if node is not None else _node_folders(recovery_root)
    found = [info for folder in folders for info in _snapshots_in(folder)]
    if node is not None:
        found = [info for info in found if info.node == node]
    return sorted(found, key=lambda i: (i.created, i.manifest_path.name), reverse=True)


def verify_snapshot(manifest_path: Path,
                    trusted: Mapping[str, Ed25519PublicKey]) -> VerifiedSnapshot:
    """Check a snapshot before merging or restoring it; cheap checks first, like segments.

    Steps may be authored by the snapshot's node or by a node listed in its "merged"
    (a snapshot holds the peers' steps it had merged); the manifest's signature over the
    file's sha256 binds all of them to the node that vouches for them.
    """
    manifest_path = Path(manifest_path)
    manifest = _read_manifest(manifest_path)
    node = manifest["node"]
    db_path = check_signed_file(manifest_path, manifest, trusted, "Snapshot", "snapshot again")
    _check_snapshot_db(db_path, manifest)
    return VerifiedSnapshot(node, manifest["seq"], manifest["rows"], manifest["sha256"],
                            manifest["created"], dict(manifest["merged"]), db_path,
                            manifest_path, db_path.stat().st_size)


def _read_manifest(path: Path) -> dict:
    def bad(why: str) -> SegmentError:
        return SegmentError("bad_manifest", f"Snapshot manifest {path} {why}; remove it, or ask "
                            "its node to snapshot again.")

    manifest = load_manifest(path, MANIFEST_KEYS, bad)
    ints = ("twinsync", "seq", "rows")
    if (any(type(manifest[k]) is not int for k in ints)
            or any(not isinstance(manifest[k], str) for k in MANIFEST_KEYS - set(ints) - {"merged"})
            or not isinstance(manifest["merged"], dict)):
        raise bad("has a field of the wrong type")
    if manifest["twinsync"] != MANIFEST_VERSION or manifest["kind"] != "snapshot":
        raise bad(f"is not a version {MANIFEST_VERSION} snapshot manifest")
    if not NODE_NAME_RE.match(manifest["node"]):
        raise bad("names a node that is not a valid node name")
    if manifest["seq"] < 0 or manifest["rows"] < 0:
        raise bad("has a negative seq or row count")
    peers = manifest["merged"]
    if any(not isinstance(peer, str) or not NODE_NAME_RE.match(peer) or peer == manifest["node"]
           or type(seq) is not int or seq < 1 for peer, seq in peers.items()):
        raise bad('has a "merged" that is not a map of other nodes to positive seqs')
    if (not SNAPSHOT_FILE_RE.match(manifest["file"])
            or manifest["file"] != path.with_suffix(".db").name):
        raise bad(f"names the file {manifest['file']!r} instead of its own snapshot")
    if not SHA256_RE.match(manifest["sha256"]):
        raise bad("has a malformed sha256")
    try:
        parse_ts(manifest["created"])
    except ValueError:
        raise bad("has a malformed created time") from None
    return manifest


def _check_snapshot_db(db_path: Path, manifest: Mapping) -> None:
    """The checks every steps file gets, plus coverage: only published sessions, and the
    segment seqs the manifest claims."""
    def refuse(code: str, why: str) -> SegmentError:
        return SegmentError(code, f"Snapshot {db_path} {why}; remove it and ask "
                            f"{manifest['node']} to snapshot again.")

    def coverage(conn: sqlite3.Connection) -> None:
        if conn.execute("SELECT 1 FROM sessions WHERE status != 'published' LIMIT 1").fetchone():
            raise refuse("unpublished", "holds sessions that were never published")
        if _coverage(conn, "main", manifest["node"]) != (manifest["seq"], manifest["merged"]):
            raise refuse("seq_mismatch", "covers other segment seqs than its manifest says")

    check_steps_db(db_path, manifest["rows"], [manifest["node"], *manifest["merged"]], refuse,
                   schema_problem=_schema_problem, authors_why="a node it does not list as merged",
                   extra=coverage)


def _schema_problem(conn: sqlite3.Connection) -> str | None:
    """Why this is not a trimmed trace.db of our schema version, or None."""
    if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        return f"is not a trace database of schema version {SCHEMA_VERSION}"
    objects = conn.execute("SELECT type, name FROM sqlite_master "
                           "WHERE name NOT LIKE 'sqlite!_%' ESCAPE '!'").fetchall()
    extra = sorted(f"{kind} {name}" for kind, name in objects if kind not in ("table", "index")
                   or (kind == "table" and name not in KEPT_TABLES))
    if extra:
        return f"holds {', '.join(extra)}, which a snapshot never carries"
    tables = {name for kind, name in objects if kind == "table"}
    if tables != set(KEPT_TABLES) or not steps_schema_ok(conn):
        return "does not have the tables twinsync writes"
    for table, needed in REQUIRED_COLUMNS.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if not needed <= have:
            return f"lacks columns {', '.join(sorted(needed - have))} of table {table}"
    return None


# --- merge: a peer that fell behind catches up -----------------------------------------------

def merge_snapshot(trace_db_path: Path, verified: VerifiedSnapshot, clock: Clock = utc_now) -> int:
    """Union a verified snapshot's steps into trace.db in one transaction; returns rows inserted.

    `merged` then records the snapshot's node as merged up to its seq, and every peer it
    carries up to the seq it lists where that is higher than what trace.db records, each
    with that segment's own sha256, so merging that very segment later is a no-op and the
    next one continues the sequence. Idempotent. A snapshot whose seq is already merged
    here with another sha256 raises SegmentError("seq_reused").
    """
    conn = connect(trace_db_path)
    add_step_hash_function(conn)
    where = f"{verified.manifest_path} of {verified.node}"
    try:
        try:
            conn.execute("ATTACH DATABASE ? AS snap", (readonly_uri(verified.db_path),))
        except sqlite3.DatabaseError as exc:
            raise TraceError(f"Cannot open snapshot {verified.db_path} ({exc}); nothing was "
                             "merged, verify it again.") from None
        try:
            with write_transaction(conn):
                claims = _claims(conn, verified)
                own = claims[0]
                recorded = conn.execute("SELECT sha256 FROM merged WHERE node = ? AND seq = ?",
                                        (own[0], own[1])).fetchone()
                if recorded is not None and recorded[0] != own[2]:
                    raise SegmentError("seq_reused", f"Snapshot {where} covers seq {own[1]} with "
                                       "other content than the segment already merged here; "
                                       f"{verified.node} may have been restored from an old "
                                       "snapshot, check it before merging.")
                authors = json.dumps([verified.node, *verified.merged])
                # Steps already here are skipped before hashing: a peer that fell behind
                # mostly has them (CASE, because SQLite would run the subquery last).
                conn.execute(f"INSERT OR IGNORE INTO main.steps ({COLUMNS}) SELECT {COLUMNS} "
                             "FROM snap.steps s WHERE author IN (SELECT value FROM json_each(?)) "
                             "AND CASE WHEN EXISTS (SELECT 1 FROM main.steps m "
                             "WHERE m.hash = s.hash) THEN 0 "
                             f"ELSE step_hash({HASHED}) = hash END", (authors,))
                inserted = conn.execute("SELECT changes()").fetchone()[0]
                now = format_ts(clock())
                for i, (node, seq, sha) in enumerate(claims):
                    _record_merged(conn, node, seq, sha, inserted if i == 0 else 0, now)
            return inserted
        except sqlite3.DatabaseError as exc:
            raise TraceError(f"Merging snapshot {where} into {trace_db_path} failed ({exc}); "
                             "nothing was merged, try again and verify the snapshot if it "
                             "persists.") from None
        finally:
            conn.execute("DETACH DATABASE snap")
    finally:
        conn.close()


def _claims(conn: sqlite3.Connection, verified: VerifiedSnapshot) -> list[tuple[str, int, str]]:
    """(node, seq, sha256 of that segment) for the snapshot's node first, then each peer."""
    def sha(node: str, seq: int, own: bool) -> str:
        query = ("SELECT sha256 FROM snap.merged WHERE node = ? AND seq = ?" if not own else
                 "SELECT sha256 FROM snap.publish_log WHERE seq = ?2 UNION ALL "
                 "SELECT sha256 FROM snap.merged WHERE node = ?1 AND seq = ?2")
        row = conn.execute(query, (node, seq)).fetchone()
        return row[0] if row else verified.sha256

    claims = [(verified.node, verified.seq, sha(verified.node, verified.seq, True))]
    claims += [(peer, seq, sha(peer, seq, False)) for peer, seq in sorted(verified.merged.items())]
    return claims


def _record_merged(conn: sqlite3.Connection, node: str, seq: int, sha256: str, rows: int,
                   now: str) -> None:
    """Record `node` as merged up to `seq` unless trace.db already records that far."""
    newest = conn.execute("SELECT max(seq) FROM merged WHERE node = ?", (node,)).fetchone()[0]
    if seq >= 1 and (newest is None or seq > newest):
        conn.execute("INSERT INTO merged (node, seq, sha256, rows, merged) VALUES (?, ?, ?, ?, ?)",
                     (node, seq, sha256, rows, now))


# --- restore ----------------------------------------------------------------------------------

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
    snapshot's seq, so its newer segments can still be merged. Afterwards merge
    `segments_after(...)` with `segments.merge_segment`.
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
            _fsync_file(tmp)
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
                row = conn.execute(
                    "SELECT sha256 FROM publish_log WHERE seq = ?2 UNION ALL "
                    "SELECT sha256 FROM merged WHERE node = ?1 AND seq = ?2",
                    (verified.node, verified.seq)).fetchone()
                conn.execute("DELETE FROM publish_log")
                conn.execute("DELETE FROM sessions")
                _record_merged(conn, verified.node, verified.seq,
                               row[0] if row else verified.sha256, verified.rows,
                               format_ts(clock()))
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
    wal = _sidecar(tmp, "-wal")
    if wal.exists() and wal.stat().st_size:
        raise TraceError(f"{wal} still holds changes after its last connection closed; make "
                         "sure nothing else opened it, then restore again.")
    for side in ("-wal", "-shm"):
        _sidecar(tmp, side).unlink(missing_ok=True)


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
    sides = [p for p in (_sidecar(target, "-wal"), _sidecar(target, "-shm")) if p.exists()]
    if not target.exists() and not sides:
        return None
    moment = clock()
    backup = target.with_name(f"{target.name}.bak-{snapshot_stamp(moment)}")
    while any(p.exists() for p in (backup, _sidecar(backup, "-wal"), _sidecar(backup, "-shm"))):
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
        side.rename(_sidecar(backup, side.name[len(target.name):]))
    fsync_dir(target.parent)
    return kept


def _remove_db_files(path: Path) -> None:
    for p in (path, _sidecar(path, "-wal"), _sidecar(path, "-shm"), _sidecar(path, "-journal")):
        p.unlink(missing_ok=True)


# --- which segments and snapshots to merge next ---------------------------------------------

def segments_after(recovery_root: Path, trace_db_path: Path,
                   node: str | None = None) -> list[Path]:
    """Segment manifests under every node folder that trace.db does not hold yet.

    Newer means a seq above what `merged` records for that node, and for this node's own
    folder also above its `publish_log`. This node is `node` when given, else recognised
    by a manifest whose seq and sha256 are in publish_log. Ordered by node, then seq, the
    order `merge_segment` needs. Unreadable manifests are left out (verifying them names
    the reason).
    """
    segments = list(_segment_manifests(Path(recovery_root)))
    thresholds = _thresholds(trace_db_path, node, segments)
    newer = [(m["node"], m["seq"], path) for path, m in segments
             if m["seq"] > thresholds.get(m["node"], 0)]
    return [path for _, _, path in sorted(newer)]


def snapshots_to_catch_up(recovery_root: Path, trace_db_path: Path,
                          node: str | None = None) -> list[Path]:
    """Snapshot manifests to `merge_snapshot` before `segments_after`, one per lagging node.

    A node is lagging when the segment right after what trace.db holds was pruned from its
    folder while a snapshot covers more; its newest snapshot by seq is listed.
    """
    recovery_root = Path(recovery_root)
    segments = list(_segment_manifests(recovery_root))
    thresholds = _thresholds(trace_db_path, node, segments)
    present = {(m["node"], m["seq"]) for _, m in segments}
    best: dict[str, SnapshotInfo] = {}
    for info in list_snapshots(recovery_root):
        if info.size is not None and (info.node not in best or
                                      (info.seq, info.created) > (best[info.node].seq,
                                                                  best[info.node].created)):
            best[info.node] = info
    return [info.manifest_path for name, info in sorted(best.items())
            if info.seq > thresholds.get(name, 0)
            and (name, thresholds.get(name, 0) + 1) not in present]


def _thresholds(trace_db_path: Path, node: str | None,
                segments: list[tuple[Path, dict]]) -> dict[str, int]:
    conn = connect(trace_db_path)
    try:
        thresholds = dict(conn.execute("SELECT node, max(seq) FROM merged GROUP BY node"))
        published = set(conn.execute("SELECT seq, sha256 FROM publish_log"))
    finally:
        conn.close()
    own = {node} if node is not None else set()
    own |= {m["node"] for _, m in segments if (m["seq"], m["sha256"]) in published}
    last = max((seq for seq, _ in published), default=0)
    for name in own:
        thresholds[name] = max(thresholds.get(name, 0), last)
    return thresholds


def _segment_manifests(recovery_root: Path) -> Iterator[tuple[Path, dict]]:
    for folder in _node_folders(recovery_root):
        yield from _segments_in(folder)


def _segments_in(recovery_dir: Path) -> Iterator[tuple[Path, dict]]:
    """(manifest path, manifest) of readable segment manifests that name their own .db."""
    for path in sorted((Path(recovery_dir) / SEGMENTS_DIR).glob("seg-*.json")):
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if (isinstance(manifest, dict) and isinstance(manifest.get("node"), str)
                and type(manifest.get("seq")) is int and isinstance(manifest.get("sha256"), str)
                and manifest.get("file") == path.with_suffix(".db").name):
            yield path, manifest


def _snapshots_in(recovery_dir: Path) -> list[SnapshotInfo]:
    found = []
    for path in (Path(recovery_dir) / SNAPSHOTS_DIR).glob("snap-*.json"):
        try:
            m = _read_manifest(path)
        except SegmentError:
            continue
        db_path = path.with_name(m["file"])
        try:
            size: int | None = db_path.stat().st_size
        except OSError:
            size = None
        found.append(SnapshotInfo(m["node"], m["created"], m["seq"], m["rows"], dict(m["merged"]),
                                  m["sha256"], db_path, path, size))
    return sorted(found, key=lambda i: (i.created, i.manifest_path.name), reverse=True)


def _node_folders(recovery_root: Path) -> list[Path]:
    try:
        return sorted(p for p in Path(recovery_root).iterdir()
                      if p.is_dir() and NODE_NAME_RE.match(p.name))
    except FileNotFoundError:
        return []


# --- retention --------------------------------------------------------------------------------

def prune(recovery_dir: Path, keep_snapshots: int) -> list[Path]:
    """Keep the newest `keep_snapshots` snapshots of this node's folder, and the segments
    after the oldest of them; returns the files deleted.

    Only pairs with a readable manifest are deleted, manifest first, so a peer never sees
    a manifest without its .db, and a .db still waiting for its manifest is never touched.
    """
    if keep_snapshots < 1:
        raise TraceError(f"Cannot prune {recovery_dir} down to {keep_snapshots} snapshots; keep "
                         "at least 1, or peers that fall behind cannot catch up.")
    recovery_dir = Path(recovery_dir)
    snapshots = [info for info in _snapshots_in(recovery_dir) if info.size is not None]
    kept = snapshots[:keep_snapshots]
    deleted: list[Path] = []
    try:
        for info in snapshots[keep_snapshots:]:
            deleted += _delete_pair(info.manifest_path, info.db_path)
        if kept:
            floor = min(info.seq for info in kept)
            for path, manifest in list(_segments_in(recovery_dir)):
                if manifest["seq"] <= floor:
                    deleted += _delete_pair(path, path.with_suffix(".db"))
    except OSError as exc:
        raise TraceError(f"Cannot prune {recovery_dir} ({exc}); check its permissions, then "
                         "prune again.") from None
    for folder in {path.parent for path in deleted}:
        fsync_dir(folder)
    return deleted


def _delete_pair(manifest_path: Path, db_path: Path) -> list[Path]:
    gone = []
    for path in (manifest_path, db_path):
        if path.exists():
            path.unlink()
            gone.append(path)
    return gone


def due_for_snapshot(recovery_dir: Path, every_segments: int, every_minutes: int,
                     now: datetime) -> bool:
    """True when this node's folder wants a new snapshot.

    That is: no snapshot yet but some segment; or at least `every_segments` segments
    published since the newest snapshot; or `every_minutes` passed since it and at least
    one segment is newer. A limit of 0 or less turns that rule off.
    """
    snapshots = [info for info in _snapshots_in(recovery_dir) if info.size is not None]
    seqs = [manifest["seq"] for _, manifest in _segments_in(recovery_dir)]
    if not snapshots:
        return bool(seqs)
    newest = snapshots[0]
    newer = sum(1 for seq in seqs if seq > newest.seq)
    if newer == 0:
        return False
    if every_segments > 0 and newer >= every_segments:
        return True
    return every_minutes > 0 and now - parse_ts(newest.created) >= timedelta(minutes=every_minutes)
