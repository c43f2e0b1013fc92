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
  path), and any other table, view, trigger or index (local state never leaves the
  node, and a peer refuses a snapshot that carries one).

The manifest is written last: `{"twinsync": 1, "kind": "snapshot", "node", "file",
"sha256", "rows", "created", "seq", "merged": {peer: seq}, "sig"}`; `seq` is the node's
last segment whose steps the snapshot holds, `merged` the same for each peer.

A peer that fell behind (the segments it needs were pruned, or one is lost on the way)
bridges the gap with `merge_snapshot`, the same union as `merge_segment`, which records
every seq of the snapshot's node that it covers, so the merge plan goes on after it.
`folders/restore` replaces trace.db by a copy of a snapshot.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from folders.errors import TraceError, echo
from folders.files import fsync_dir, temp_path_for, write_atomic
from folders.layout import NODE_NAME_RE
from folders.manifest import (
    SHA256_RE,
    SegmentError,
    check_signed_file,
    file_sha256,
    load_manifest,
    manifest_bytes,
    sign_manifest,
)
from folders.segments import SEGMENTS_DIR, read_segment_manifest
from folders.stepsfile import (
    BRIDGED_PREFIX,
    Refuse,
    add_step_hash_function,
    attached,
    check_steps_db,
    is_bridged,
    map_private_copy,
    schema_problem,
    union_steps,
)
from folders.trace import (
    SCHEMA_VERSION,
    TRACE_INDEXES,
    Clock,
    connect,
    format_ts,
    utc_now,
    write_transaction,
)

MANIFEST_VERSION = 1
MANIFEST_KEYS = frozenset(
    {"twinsync", "kind", "node", "file", "sha256", "rows", "created", "seq", "merged", "sig"})
#: Signed by a twinsync that ran SQLite's integrity_check on exactly the bytes it signed;
#: a restore of the node's own snapshot then need not run it again (`folders.restore`).
INTEGRITY_CHECKED = "integrity_checked"
SNAPSHOTS_DIR = "snapshots"
#: A snapshot's name without its suffix; its .db and its manifest (.json) share it.
SNAPSHOT_STEM = r"snap-\d{8}T\d{12}Z"
SNAPSHOT_FILE_RE = re.compile(rf"^{SNAPSHOT_STEM}\.db$")
#: The tables a snapshot carries; everything else in trace.db is local to the node.
KEPT_TABLES = ("steps", "sessions", "publish_log", "merged")
#: Columns of the kept tables that restore and merge read (steps is checked exactly).
REQUIRED_COLUMNS = {"sessions": {"session", "author", "status"},
                    "publish_log": {"seq", "sha256"},
                    "merged": {"node", "seq", "sha256", "rows", "merged"}}



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
    hashes_checked: bool = True  # False: merge_snapshot recomputes every step's hash


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
                    map_private_copy(copy)  # our scratch copy
                    check = [row[0] for row in copy.execute("PRAGMA integrity_check")]
                finally:
                    copy.close()
            finally:
                source.close()
            if check != ["ok"]:
                raise TraceError(f"Cannot snapshot {trace_db_path}: its copy fails SQLite's "
                                 f"integrity_check ({check[0]}), so it was not published. Run "
                                 f"`sqlite3 {trace_db_path} 'PRAGMA integrity_check'`; if that fails "
                                 "too, restore trace.db from the newest snapshot with `twinsync restore`.")
            fsync_dir(tmp)  # open read-only and fsync: works on a file too
            tmp.replace(db_path)
        finally:
            for leftover in (tmp, sidecar(tmp, "-journal")):
                leftover.unlink(missing_ok=True)
        fsync_dir(out_dir)
        digest = file_sha256(db_path)
        manifest = sign_manifest({
            "twinsync": MANIFEST_VERSION, "kind": "snapshot", "node": node,
            "file": db_path.name, "sha256": digest, "rows": rows, "created": created,
            "seq": seq, "merged": merged, INTEGRITY_CHECKED: True}, key)
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
            "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view', 'trigger', "
            "'index') AND name NOT LIKE 'sqlite!_%' ESCAPE '!'").fetchall():
        if not ((kind == "table" and name in KEPT_TABLES)
                or (kind == "index" and name in TRACE_INDEXES)):
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


def sidecar(db: Path, suffix: str) -> Path:
    return db.with_name(db.name + suffix)


# --- list and verify --------------------------------------------------------------------------

def list_snapshots(recovery_root: Path, node: str | None = None) -> list[SnapshotInfo]:
    """Snapshots under `recovery_root` (all nodes, or one), newest first, from their manifests.

    Cheap: nothing is hashed or opened. A manifest that cannot be read is left out; it is
    refused with its reason when someone verifies it.
    """
    recovery_root = Path(recovery_root)
    folders = [recovery_root / node] if node is not None else node_folders(recovery_root)
    found = [info for folder in folders for info in snapshots_in(folder)]
    if node is not None:
        found = [info for info in found if info.node == node]
    return sorted(found, key=lambda i: (i.created, i.manifest_path.name), reverse=True)


def verify_snapshot(manifest_path: Path, trusted: Mapping[str, Ed25519PublicKey], *,
                    hash_steps: bool = True) -> VerifiedSnapshot:
    """Check a snapshot before merging or restoring it; cheap checks first, like segments.

    Steps may be authored by the snapshot's node or by a node listed in its "merged"
    (a snapshot holds the peers' steps it had merged); the manifest's signature over the
    file's sha256 binds all of them to the node that vouches for them. `hash_steps=False`
    only when `merge_snapshot` follows, which then recomputes every step's hash itself.
    A restore checks its own copy instead (`folders.restore`), so it reads the file once.
    """
    manifest_path = Path(manifest_path)
    manifest = read_snapshot_manifest(manifest_path)
    db_path = check_signed_file(manifest_path, manifest, trusted, "Snapshot", "snapshot again")
    return check_snapshot_db(manifest_path, manifest, db_path, hash_steps=hash_steps)


def check_snapshot_db(manifest_path: Path, manifest: Mapping, db_path: Path, *,
                      copy: Path | None = None, hash_steps: bool = True, workers: int = 1) -> VerifiedSnapshot:
    """The checks after the signature and the sha256 (`check_signed_file`): SQLite's
    quick_check, the schema, the row count, coverage, every step's hash, the authors.

    `copy`: a private copy of `db_path` whose sha256 the caller proved; the checks then
    run on the copy, so what the caller puts in place is exactly what was checked, while
    every message names `db_path`. Only then may `workers` > 1 processes hash its steps."""
    if workers > 1 and copy is None:
        raise ValueError("steps are hashed in child processes only on a private copy")
    _check_snapshot_db(copy or db_path, manifest, hash_steps, named=db_path, workers=workers)
    return VerifiedSnapshot(manifest["node"], manifest["seq"], manifest["rows"], manifest["sha256"],
                            manifest["created"], dict(manifest["merged"]), db_path,
                            manifest_path, (copy or db_path).stat().st_size, hash_steps)


def read_snapshot_manifest(path: Path) -> dict:
    """A snapshot manifest, every field of the right type; SegmentError ("bad_manifest")
    with the reason otherwise. The signature is checked by `verify_snapshot`."""
    path = Path(path)

    def bad(why: str) -> SegmentError:
        return SegmentError("bad_manifest", f"Snapshot manifest {path} {why}; remove it, or ask "
                            "its node to snapshot again.")

    manifest = load_manifest(path, MANIFEST_KEYS, bad, optional=frozenset({INTEGRITY_CHECKED}))
    ints = ("twinsync", "seq", "rows")
    if (any(type(manifest[k]) is not int for k in ints)
            or any(not isinstance(manifest[k], str) for k in MANIFEST_KEYS - set(ints) - {"merged"})
            or not isinstance(manifest["merged"], dict)):
        raise bad("has a field of the wrong type")
    if manifest.get(INTEGRITY_CHECKED, True) is not True:
        raise bad(f'has an "{INTEGRITY_CHECKED}" that is not true')
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
        raise bad(f"names the file {echo(manifest['file'])} instead of its own snapshot")
    if not SHA256_RE.match(manifest["sha256"]):
        raise bad("has a malformed sha256")
    return manifest


def _refuser(db_path: Path, node: str) -> Refuse:
    def refuse(code: str, why: str) -> SegmentError:
        return SegmentError(code, f"Snapshot {db_path} {why}; remove it and ask {node} to snapshot again.")

    return refuse


def _check_snapshot_db(db_path: Path, manifest: Mapping, hash_steps: bool, named: Path,
                       workers: int) -> None:
    """The checks every steps file gets, plus coverage: only published sessions, and the
    segment seqs the manifest claims."""
    refuse = _refuser(named, manifest["node"])

    def coverage(conn: sqlite3.Connection) -> None:
        if conn.execute("SELECT 1 FROM sessions WHERE status != 'published' LIMIT 1").fetchone():
            raise refuse("unpublished", "holds sessions that were never published")
        if _coverage(conn, "main", manifest["node"]) != (manifest["seq"], manifest["merged"]):
            raise refuse("seq_mismatch", "covers other segment seqs than its manifest says")

    check_steps_db(db_path, manifest["rows"], [manifest["node"], *manifest["merged"]], refuse,
                   schema=_schema_problem, authors_why="a node it does not list as merged",
                   extra=coverage, hash_steps=hash_steps, workers=workers)


def _schema_problem(conn: sqlite3.Connection) -> str | None:
    """Why this is not a trimmed trace.db of our schema version, or None."""
    if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        return f"is not a trace database of schema version {SCHEMA_VERSION}"
    problem = schema_problem(conn, KEPT_TABLES, TRACE_INDEXES, "snapshot")
    if problem:
        return problem
    for table, needed in REQUIRED_COLUMNS.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if not needed <= have:
            return f"lacks columns {', '.join(sorted(needed - have))} of table {table}"
    return None


# --- merge: a peer that fell behind catches up -----------------------------------------------

def merge_snapshot(trace_db_path: Path, verified: VerifiedSnapshot, clock: Clock = utc_now) -> int:
    """Union a verified snapshot's steps into trace.db in one transaction; returns rows inserted.

    `merged` then records every seq 1..`seq` of the snapshot's node that it did not hold,
    each with that segment's own sha256 where the snapshot's tables know it (so merging
    that very segment later is a no-op), else as bridged by this snapshot. Peers' steps
    the snapshot carries are merged too, but their seqs are not recorded: a snapshot may
    lack a peer's segment (a hole it had), so only that peer's own segments or snapshot
    close a peer's sequence. Idempotent. A snapshot whose own seq is already merged here
    with another sha256 raises SegmentError("seq_reused").
    """
    conn = connect(trace_db_path)
    add_step_hash_function(conn)
    where = f"{verified.manifest_path} of {verified.node}"
    try:
        with attached(conn, verified.db_path, "snap", "snapshot") as identity:
            try:
                with write_transaction(conn):
                    held = dict(conn.execute("SELECT seq, sha256 FROM merged WHERE node = ?",
                                             (verified.node,)))
                    known = dict(conn.execute(
                        "SELECT seq, sha256 FROM snap.publish_log UNION ALL "
                        "SELECT seq, sha256 FROM snap.merged WHERE node = ?", (verified.node,)))
                    top = held.get(verified.seq)
                    if (top is not None and not is_bridged(top) and verified.seq in known
                            and known[verified.seq] != top):
                        raise SegmentError("seq_reused", f"Snapshot {where} covers seq "
                                           f"{verified.seq} with other content than the segment "
                                           f"already merged here; {verified.node} may have been "
                                           "restored from an old snapshot, check it before merging.")
                    inserted = union_steps(conn, "snap", [verified.node, *verified.merged],
                                           hashes_checked=verified.hashes_checked,
                                           refuse=_refuser(verified.db_path, verified.node),
                                           db_path=verified.db_path, identity=identity)
                    now = format_ts(clock())
                    bridged = BRIDGED_PREFIX + verified.sha256
                    conn.executemany(
                        "INSERT INTO merged (node, seq, sha256, rows, merged) VALUES (?, ?, ?, ?, ?)",
                        ((verified.node, seq, known.get(seq, bridged),
                          inserted if seq == verified.seq else 0, now)
                         for seq in range(1, verified.seq + 1) if seq not in held))
                return inserted
            except sqlite3.DatabaseError as exc:
                raise TraceError(f"Merging snapshot {where} into {trace_db_path} failed ({exc}); "
                                 "nothing was merged, try again and verify the snapshot if it "
                                 "persists.") from None
    finally:
        conn.close()


def snapshots_in(recovery_dir: Path) -> list[SnapshotInfo]:
    """Snapshots of one node folder with a readable manifest, newest first; the merge plan
    reports the others with their reasons."""
    found = []
    for path in (Path(recovery_dir) / SNAPSHOTS_DIR).glob("snap-*.json"):
        try:
            m = read_snapshot_manifest(path)
        except SegmentError:
            continue
        db_path = path.with_name(m["file"])
        try:
            size: int | None = db_path.stat().st_size if db_path.is_file() else None
        except OSError:
            size = None
        found.append(SnapshotInfo(m["node"], m["created"], m["seq"], m["rows"], dict(m["merged"]),
                                  m["sha256"], db_path, path, size))
    return sorted(found, key=lambda i: (i.created, i.manifest_path.name), reverse=True)


def segments_in(recovery_dir: Path) -> list[tuple[Path, dict]]:
    """(manifest path, manifest) of one node folder's readable segment manifests."""
    found = []
    for path in sorted((Path(recovery_dir) / SEGMENTS_DIR).glob("seg-*.json")):
        try:
            found.append((path, read_segment_manifest(path)))
        except SegmentError:
            continue
    return found


def node_folders(recovery_root: Path) -> list[Path]:
    """The node folders under trace/recovery/, by name."""
    try:
        return sorted(p for p in Path(recovery_root).iterdir()
                      if p.is_dir() and not p.is_symlink() and NODE_NAME_RE.match(p.name))
    except FileNotFoundError:
        return []
