"""Segments: how published steps leave one node and join another (reasoning-merge-core).

A segment is a small SQLite file holding the steps one publish took, beside a manifest
signed by its node. Numbering, per node: `seq` counts segments (1, 2, ...) and is what
the merge plan walks; `first`/`last` count the node's published steps (1-based, running
across segments) and name the file, `seg-<first:08d>-<last:08d>.db`, so a reader sees at
a glance whether any steps are missing between two segments.

Merging is a union by step hash (folders/stepsfile), hence commutative, associative and
idempotent across nodes. Which segment merges when is the merge plan's business
(folders/mergeplan): seq N only after N-1, or after a snapshot that covers the gap.
trace.db's `merged` table records every (node, seq) merged, a set, so a hole stays
visible until it is filled.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from folders.errors import TraceError, echo
from folders.files import fsync_dir, temp_path_for, write_atomic
from folders.manifest import (
    SHA256_RE,
    SegmentError,
    check_signed_file,
    file_sha256,
    load_manifest,
    manifest_bytes,
    sign_manifest,
)
from folders.stepsfile import (
    COLUMNS,
    Refuse,
    add_step_hash_function,
    attached,
    check_steps_db,
    is_bridged,
    schema_problem,
    union_steps,
)
from folders.trace import (
    MERGE_CACHE_KIB,
    STEP_COLUMNS,
    STEP_NOT_NULL,
    STEP_SCHEMA,
    Clock,
    chain_steps,
    coherence_check,
    connect,
    format_ts,
    utc_now,
    write_transaction,
)

MANIFEST_VERSION = 1
MANIFEST_KEYS = frozenset(
    {"twinsync", "node", "seq", "file", "sha256", "rows", "first", "last", "created", "sig"})
SEGMENTS_DIR = "segments"


@dataclass(frozen=True)
class Segment:
    """What one publish wrote."""

    node: str
    seq: int
    first: int
    last: int
    rows: int
    sessions: tuple[str, ...]
    db_path: Path
    manifest_path: Path
    sha256: str
    created: str


@dataclass(frozen=True)
class VerifiedSegment:
    """A segment whose every check passed; only `verify_segment` should make one."""

    node: str
    seq: int
    first: int
    last: int
    rows: int
    sha256: str
    created: str
    db_path: Path
    manifest_path: Path
    hashes_checked: bool = True  # False: merge_segment recomputes every step's hash


def segment_name(first: int, last: int) -> str:
    return f"seg-{first:08d}-{last:08d}"


def waiting_to_publish(conn: sqlite3.Connection, node: str) -> list[str]:
    """Sessions of `node` finished and not yet published, oldest first: what the next
    publish takes (those COHERENCE-CHECK passes)."""
    return [row[0] for row in conn.execute(
        "SELECT session FROM sessions WHERE status = 'finished' AND author = ? ORDER BY started, session", (node,))]


def publish(trace_db_path: Path, out_dir: Path, node: str, key: Ed25519PrivateKey,
            clock: Clock = utc_now) -> Segment | None:
    """Publish `node`'s finished, coherent, unpublished sessions as one new segment.

    The write lock on trace.db is held throughout, so two publishes never take the same
    sessions. Files come first and the sessions are marked published last: a crash in
    between leaves them unmarked, and the next publish sends them again under a new seq,
    which merging ignores as duplicates. Nothing is ever marked published and then lost.
    """
    out_dir = Path(out_dir)
    conn = connect(trace_db_path)
    try:
        with write_transaction(conn):
            candidates = waiting_to_publish(conn, node)
            chains = {session: chain_steps(conn, session) for session in candidates}
            ready = [session for session, chain in chains.items()
                     if not coherence_check(conn, session, chain)]
            if not ready:
                return None
            out_dir.mkdir(parents=True, exist_ok=True)
            seq, first = _next_position(conn, out_dir)
            conn.executemany(
                "UPDATE sessions SET status = 'published', published_seq = ? WHERE session = ?",
                [(seq, session) for session in ready])
            steps = (tuple(getattr(step, c) for c in STEP_COLUMNS)
                     for session in ready for step in chains[session])
            rows = sum(len(chains[session]) for session in ready)
            last = first + rows - 1
            name = segment_name(first, last)
            db_path = out_dir / f"{name}.db"
            _write_segment_db(db_path, steps)
            digest = file_sha256(db_path)
            created = format_ts(clock())
            manifest = sign_manifest({"twinsync": MANIFEST_VERSION, "node": node, "seq": seq,
                                      "file": db_path.name, "sha256": digest, "rows": rows,
                                      "first": first, "last": last, "created": created}, key)
            manifest_path = out_dir / f"{name}.json"
            write_atomic(manifest_path, manifest_bytes(manifest))
            conn.execute(
                "INSERT INTO publish_log (seq, first, last, rows, file, sha256, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", (seq, first, last, rows, db_path.name, digest,
                                                 created))
    finally:
        conn.close()
    return Segment(node, seq, first, last, rows, tuple(ready), db_path, manifest_path, digest,
                   created)


def _next_position(conn: sqlite3.Connection, out_dir: Path) -> tuple[int, int]:
    """Next (seq, first step number), past both our log and what already sits in `out_dir`.

    The folder counts too: after a crash before the log was updated, or after trace.db was
    restored from an older snapshot, reusing a seq would get the new segment refused.
    """
    seq, last = conn.execute("SELECT max(seq), max(last) FROM publish_log").fetchone()
    seq, last = seq or 0, last or 0
    for path in out_dir.glob("seg-*.json"):
        try:
            manifest = read_segment_manifest(path)
        except SegmentError as exc:
            raise TraceError(f"Cannot read our own segment manifest {path} ({exc.code}); move it "
                             "aside (peers keep their copy) and publish again.") from None
        seq, last = max(seq, manifest["seq"]), max(last, manifest["last"])
    return seq + 1, last + 1


def _write_segment_db(db_path: Path, steps: Iterable[tuple]) -> None:
    """Stream rows into a temp file, fsync, rename: readers never see a half-written segment."""
    tmp = temp_path_for(db_path)
    try:
        seg = sqlite3.connect(tmp, isolation_level=None)
        try:
            import sqlite_utils  # only to write a segment: readers of traces stay light

            seg.execute("PRAGMA journal_mode=OFF")
            sqlite_utils.Database(seg)["steps"].create(STEP_SCHEMA, pk="hash",
                                                       not_null=STEP_NOT_NULL)
            seg.execute("BEGIN")
            seg.executemany(f"INSERT INTO steps ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            steps)
            seg.execute("COMMIT")
        finally:
            seg.close()
        fsync_dir(tmp)  # open read-only and fsync: works on a file too
        tmp.replace(db_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(db_path.parent)


def read_segment_manifest(path: Path) -> dict:
    """A segment manifest, every field of the right type and consistent; SegmentError
    ("bad_manifest") with the reason otherwise. The signature is checked by `verify_segment`."""
    path = Path(path)

    def bad(why: str) -> SegmentError:
        return SegmentError("bad_manifest", f"Segment manifest {path} {why}; remove it, or ask "
                            "its node to publish again.")

    manifest = load_manifest(path, MANIFEST_KEYS, bad)
    ints = ("twinsync", "seq", "rows", "first", "last")
    if any(type(manifest[k]) is not int for k in ints) or any(
            not isinstance(manifest[k], str) for k in MANIFEST_KEYS - set(ints)):
        raise bad("has a field of the wrong type")
    if manifest["twinsync"] != MANIFEST_VERSION:
        raise bad(f"has version {echo(manifest['twinsync'])}, this twinsync reads {MANIFEST_VERSION}")
    if (manifest["seq"] < 1 or manifest["rows"] < 1 or manifest["first"] < 1
            or manifest["last"] != manifest["first"] + manifest["rows"] - 1):
        raise bad("has inconsistent seq, rows, first and last")
    if (manifest["file"] != segment_name(manifest["first"], manifest["last"]) + ".db"
            or manifest["file"] != path.with_suffix(".db").name):
        raise bad(f"names the file {echo(manifest['file'])} instead of its own segment")
    if not SHA256_RE.match(manifest["sha256"]):
        raise bad("has a malformed sha256")
    return manifest


def verify_segment(manifest_path: Path, trusted: Mapping[str, Ed25519PublicKey], *,
                   hash_steps: bool = True) -> VerifiedSegment:
    """Check a peer's segment before any of it is merged; cheap checks first. Every step
    must be authored by the segment's node: a node may publish only its own steps.
    `hash_steps=False` when `merge_segment` follows: it recomputes each step's hash as it
    copies it (and refuses the segment as this would), so no step is hashed twice."""
    manifest_path = Path(manifest_path)
    manifest = read_segment_manifest(manifest_path)
    db_path = check_signed_file(manifest_path, manifest, trusted, "Segment", "publish again")
    check_steps_db(db_path, manifest["rows"], [manifest["node"]], _refuser(db_path, manifest["node"]),
                   schema=lambda conn: schema_problem(conn, ("steps",), frozenset(), "segment"),
                   authors_why="and a node may publish only its own steps", hash_steps=hash_steps)
    return VerifiedSegment(manifest["node"], manifest["seq"], manifest["first"], manifest["last"],
                           manifest["rows"], manifest["sha256"], manifest["created"], db_path,
                           manifest_path, hash_steps)


def _refuser(db_path: Path, node: str) -> Refuse:
    def refuse(code: str, why: str) -> SegmentError:
        return SegmentError(code, f"Segment {db_path} {why}; remove it and ask {node} to publish again.")

    return refuse


def merge_segment(trace_db_path: Path, verified: VerifiedSegment, clock: Clock = utc_now) -> int:
    """Union a verified segment into trace.db in one transaction; returns the rows inserted,
    and records (node, seq) in `merged`.

    Merging a (node, seq) already recorded is a no-op returning 0 when it is the same
    segment, or when a snapshot brought its steps; with other content it raises
    SegmentError("seq_reused"). The order is the merge plan's: this never looks at seqs.
    """
    conn = connect(trace_db_path)
    conn.execute(f"PRAGMA cache_size=-{MERGE_CACHE_KIB}")
    add_step_hash_function(conn)
    where = f"{verified.manifest_path} of {verified.node}"
    try:
        with attached(conn, verified.db_path, "seg", "segment") as identity:
            try:
                with write_transaction(conn):
                    done = conn.execute("SELECT sha256 FROM merged WHERE node = ? AND seq = ?",
                                        (verified.node, verified.seq)).fetchone()
                    if done is not None and (done[0] == verified.sha256 or is_bridged(done[0])):
                        return 0
                    if done is not None:
                        raise SegmentError(
                            "seq_reused", f"Segment {where} reuses seq {verified.seq} with other "
                            f"content than the one already merged; {verified.node} may have been "
                            "restored from an old snapshot, check it before merging.")
                    inserted = union_steps(conn, "seg", [verified.node], hashes_checked=verified.hashes_checked,
                                           refuse=_refuser(verified.db_path, verified.node),
                                           db_path=verified.db_path, identity=identity)
                    conn.execute("INSERT INTO merged (node, seq, sha256, rows, merged) "
                                 "VALUES (?, ?, ?, ?, ?)", (verified.node, verified.seq,
                                                            verified.sha256, inserted,
                                                            format_ts(clock())))
                return inserted
            except sqlite3.DatabaseError as exc:
                raise TraceError(f"Merging segment {where} into {trace_db_path} failed ({exc}); "
                                 "nothing was merged, try again and verify the segment if it "
                                 "persists.") from None
    finally:
        conn.close()
