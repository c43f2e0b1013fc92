"""Segments: how published steps leave one node and join another (reasoning-merge-core).

A segment is a small SQLite file holding the steps one publish took, beside a manifest
signed by its node. Numbering, per node: `seq` counts segments (1, 2, ...) and is what
replay protection compares; `first`/`last` count the node's published steps (1-based,
running across segments) and name the file, `seg-<first:08d>-<last:08d>.db`, so a reader
sees at a glance whether any steps are missing between two segments.

Merging is a union by step hash (INSERT OR IGNORE), hence commutative, associative and
idempotent across nodes. Per node, segments must be merged in increasing `seq`: an older
seq arriving after a newer one is refused as a replay, so callers sort by seq and wait
for gaps. Forks and consensus are pure functions of the `steps` table, so every node that
holds the same steps reaches the same answer without talking.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from folders import keys
from folders.errors import TraceError
from folders.files import fsync_dir, temp_path_for, write_atomic
from folders.trace import (
    STEP_COLUMNS,
    STEP_NOT_NULL,
    STEP_SCHEMA,
    Clock,
    Step,
    chain_steps,
    TraceDB,
    as_connection,
    canonical_json,
    coherence_check,
    connect,
    content_hash,
    format_ts,
    load_steps,
    step_hash,
    utc_now,
    write_transaction,
)

MANIFEST_VERSION = 1
MANIFEST_KEYS = frozenset(
    {"twinsync", "node", "seq", "file", "sha256", "rows", "first", "last", "created", "sig"})
#: A manifest is a few hundred bytes; anything much larger is not one of ours.
MANIFEST_MAX_BYTES = 64 * 1024
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
COLUMNS = ", ".join(STEP_COLUMNS)
#: The arguments of the SQL function `step_hash`: every column but the hash itself.
HASHED = ", ".join(STEP_COLUMNS[1:])
#: Only published sessions leave a node or count toward consensus; local shadows do not.
PUBLISHED = "session NOT IN (SELECT session FROM sessions WHERE status != 'published')"


class SegmentError(TraceError):
    """A segment was refused; `code` is stable so a caller can quarantine, wait or retry."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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


@dataclass(frozen=True)
class Fork:
    """Steps of one session that share a parent (`None`: several roots).

    `branches` are the first steps of each branch, the children of `parent`, sorted.
    """

    session: str
    parent: str | None
    branches: tuple[str, ...]


@dataclass(frozen=True)
class Consensus:
    """trace-consensus for one goal; `routes` counts its published sessions."""

    goal: str
    conclusion: str | None
    supporters: int
    routes: int
    support: float


def segment_name(first: int, last: int) -> str:
    return f"seg-{first:08d}-{last:08d}"


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
            candidates = [row[0] for row in conn.execute(
                "SELECT session FROM sessions WHERE status = 'finished' AND author = ? "
                "ORDER BY started, session", (node,))]
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
            manifest = {"twinsync": MANIFEST_VERSION, "node": node, "seq": seq,
                        "file": db_path.name, "sha256": digest, "rows": rows, "first": first,
                        "last": last, "created": created}
            manifest["sig"] = keys.sign(key, canonical_json(manifest))
            manifest_path = out_dir / f"{name}.json"
            write_atomic(manifest_path,
                         (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))
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
            manifest = json.loads(path.read_text(encoding="utf-8"))
            seq, last = max(seq, int(manifest["seq"])), max(last, int(manifest["last"]))
        except (OSError, ValueError, TypeError, KeyError):
            raise TraceError(f"Cannot read our own segment manifest {path}; move it aside "
                             "(peers keep their copy) and publish again.") from None
    return seq + 1, last + 1


def _write_segment_db(db_path: Path, steps: Iterable[tuple]) -> None:
    """Stream rows into a temp file, fsync, rename: readers never see a half-written segment."""
    tmp = temp_path_for(db_path)
    try:
        seg = sqlite3.connect(tmp, isolation_level=None)
        try:
            seg.execute("PRAGMA journal_mode=OFF")
            sqlite_utils.Database(seg)["steps"].create(STEP_SCHEMA, pk="hash",
                                                       not_null=STEP_NOT_NULL)
            seg.execute("BEGIN")
            seg.executemany(f"INSERT INTO steps ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            steps)
            seg.execute("COMMIT")
        finally:
            seg.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(db_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(db_path.parent)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so memory stays flat."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_segment(manifest_path: Path,
                   trusted: Mapping[str, Ed25519PublicKey]) -> VerifiedSegment:
    """Check a peer's segment before any of it is merged; cheap checks first.

    Steps are not signed one by one (DESIGN §7), so the manifest's signature over the file's
    sha256 is what binds every step to its node, and every step must be authored by it.
    """
    manifest_path = Path(manifest_path)
    manifest = _read_manifest(manifest_path)
    node = manifest["node"]
    db_path = check_signed_file(manifest_path, manifest, trusted, "Segment", "publish again")
    _check_segment_db(db_path, manifest)
    return VerifiedSegment(node, manifest["seq"], manifest["first"], manifest["last"],
                           manifest["rows"], manifest["sha256"], manifest["created"], db_path,
                           manifest_path)


def _read_manifest(path: Path) -> dict[str, object]:
    def bad(why: str) -> SegmentError:
        return SegmentError("bad_manifest", f"Segment manifest {path} {why}; remove it, or ask "
                            "its node to publish again.")

    manifest = load_manifest(path, MANIFEST_KEYS, bad)
    ints = ("twinsync", "seq", "rows", "first", "last")
    if any(type(manifest[k]) is not int for k in ints) or any(
            not isinstance(manifest[k], str) for k in MANIFEST_KEYS - set(ints)):
        raise bad("has a field of the wrong type")
    if manifest["twinsync"] != MANIFEST_VERSION:
        raise bad(f"has version {manifest['twinsync']}, this twinsync reads {MANIFEST_VERSION}")
    if (manifest["seq"] < 1 or manifest["rows"] < 1 or manifest["first"] < 1
            or manifest["last"] != manifest["first"] + manifest["rows"] - 1):
        raise bad("has inconsistent seq, rows, first and last")
    if manifest["file"] != segment_name(manifest["first"], manifest["last"]) + ".db":
        raise bad(f"names the file {manifest['file']!r} instead of its own segment")
    if not SHA256_RE.match(manifest["sha256"]):
        raise bad("has a malformed sha256")
    return manifest


def _check_segment_db(db_path: Path, manifest: Mapping[str, object]) -> None:
    def refuse(code: str, why: str) -> SegmentError:
        return SegmentError(code, f"Segment {db_path} {why}; remove it and ask "
                            f"{manifest['node']} to publish again.")

    check_steps_db(db_path, manifest["rows"], [manifest["node"]], refuse,
                   schema_problem=lambda conn: None if steps_schema_ok(conn)
                   else "does not have the steps table twinsync writes",
                   authors_why="and a node may publish only its own steps")


def check_steps_db(db_path: Path, rows: int, authors: list[str],
                   refuse: Callable[[str, str], SegmentError],
                   schema_problem: Callable[[sqlite3.Connection], str | None],
                   authors_why: str,
                   extra: Callable[[sqlite3.Connection], None] = lambda conn: None) -> None:
    """What a segment or snapshot file must pass before any of it is merged, in SQL so memory
    stays flat: it opens read-only, passes quick_check, has the schema, holds the manifest's
    row count, passes `extra`, every step's hash recomputes and every author is vouched for."""
    try:
        conn = sqlite3.connect(readonly_uri(db_path), uri=True)
    except sqlite3.DatabaseError:
        raise refuse("corrupt_db", "cannot be opened as SQLite") from None
    try:
        add_step_hash_function(conn)
        try:
            check = [row[0] for row in conn.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError:
            raise refuse("corrupt_db", "is not a readable SQLite database") from None
        if check != ["ok"]:
            raise refuse("corrupt_db", f"fails SQLite's quick_check ({check[0]})")
        problem = schema_problem(conn)
        if problem:
            raise refuse("bad_schema", problem)
        held = conn.execute("SELECT count(*) FROM steps").fetchone()[0]
        if held != rows:
            raise refuse("row_count", f"holds {held} steps, its manifest says {rows}")
        extra(conn)
        bad = conn.execute(f"SELECT hash FROM steps WHERE step_hash({HASHED}) IS NOT hash "
                           "LIMIT 1").fetchone()
        if bad is not None:
            raise refuse("bad_step_hash", f"holds step {bad[0]}, whose hash does not recompute")
        foreign = conn.execute(
            "SELECT hash, author FROM steps WHERE author NOT IN (SELECT value FROM json_each(?)) "
            "LIMIT 1", (json.dumps(authors),)).fetchone()
        if foreign is not None:
            raise refuse("foreign_author", f"holds step {foreign[0]} authored by {foreign[1]!r}, "
                         f"{authors_why}")
    except sqlite3.DatabaseError as exc:
        raise refuse("corrupt_db", f"cannot be read ({exc})") from None
    finally:
        conn.close()


def readonly_uri(path: Path) -> str:
    """immutable=1: no locks, no journal, nothing written into the peer's receive-only folder."""
    return Path(path).resolve().as_uri() + "?mode=ro&immutable=1"


def _sql_step_hash(session: object, goal: object, parent: object, author: object, ts: object,
                   kind: object, content: object) -> str | None:
    """`step_hash` for SQL; a value of the wrong type yields NULL, which never equals a hash."""
    texts = (session, goal, author, ts, kind, content)
    if not all(isinstance(v, str) for v in texts) or not (parent is None or isinstance(parent, str)):
        return None
    return step_hash(session, goal, parent, author, ts, kind, content)  # type: ignore[arg-type]


def _expected_schema() -> list[tuple[str, str, int, int]]:
    return [(name, "TEXT", int(name in STEP_NOT_NULL), int(name == "hash"))
            for name in STEP_COLUMNS]


def _steps_schema(conn: sqlite3.Connection, schema: str) -> list[tuple[str, str, int, int]]:
    return [(name, type_.upper(), notnull, pk) for _, name, type_, notnull, _, pk in
            conn.execute(f"PRAGMA {schema}.table_info(steps)")]


def merge_segment(trace_db_path: Path, verified: VerifiedSegment, clock: Clock = utc_now) -> int:
    """Union a verified segment into trace.db in one transaction; returns the rows inserted.

    Merging the exact segment again (same node, seq and sha256) is a no-op returning 0.
    A lower seq, or the same seq with other content, raises SegmentError ("replay",
    "seq_reused"). Rows are filtered again by hash and author inside the INSERT, so a file
    changed after verification can never bring a forged step in.
    """
    conn = connect(trace_db_path)
    add_step_hash_function(conn)
    where = f"{verified.manifest_path} of {verified.node}"
    try:
        try:
            conn.execute("ATTACH DATABASE ? AS seg", (readonly_uri(verified.db_path),))
        except sqlite3.DatabaseError as exc:
            raise TraceError(f"Cannot open segment {verified.db_path} ({exc}); nothing was "
                             "merged, verify it again.") from None
        try:
            with write_transaction(conn):
                done = conn.execute("SELECT sha256 FROM merged WHERE node = ? AND seq = ?",
                                    (verified.node, verified.seq)).fetchone()
                if done is not None and done[0] == verified.sha256:
                    return 0
                if done is not None:
                    raise SegmentError("seq_reused", f"Segment {where} reuses seq {verified.seq} "
                                       "with other content than the one already merged; "
                                       f"{verified.node} may have been restored from an old "
                                       "snapshot, check it before merging.")
                newest = conn.execute("SELECT max(seq) FROM merged WHERE node = ?",
                                      (verified.node,)).fetchone()[0]
                if newest is not None and verified.seq < newest:
                    raise SegmentError("replay", f"Segment {where} has seq {verified.seq}, older "
                                       f"than seq {newest} already merged from {verified.node}; "
                                       "it was replayed, ignore or remove it.")
                conn.execute(f"INSERT OR IGNORE INTO main.steps ({COLUMNS}) SELECT {COLUMNS} "
                             f"FROM seg.steps WHERE author = ? AND step_hash({HASHED}) = hash",
                             (verified.node,))
                inserted = conn.execute("SELECT changes()").fetchone()[0]
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
            conn.execute("DETACH DATABASE seg")
    finally:
        conn.close()


def detect_forks(db: TraceDB | sqlite3.Connection, goal: str | None = None) -> list[Fork]:
    """fr_conflict_resolver's input: every place where a session stops being one chain."""
    where, args = ("WHERE goal = ?", (goal,)) if goal is not None else ("", ())
    rows = as_connection(db).execute(
        f"SELECT session, parent, group_concat(hash, ' ') FROM steps {where} "
        "GROUP BY session, parent HAVING count(*) > 1", args)
    forks = [Fork(session, parent, tuple(sorted(hashes.split(" "))))
             for session, parent, hashes in rows]
    return sorted(forks, key=lambda f: (f.session, f.parent or "", f.branches))


class _SessionGraph:
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
        found, todo = [], [self.by_hash[start]]
        while todo:
            step = todo.pop()
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
        current = self.children.get(None)
        while current:
            step = (current[0] if len(current) == 1 else
                    self.by_hash[self.choose(tuple(c.hash for c in current))])
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
    graph = _SessionGraph(load_steps(db, fork.session))
    missing = [b for b in fork.branches if b not in graph.by_hash]
    if missing or not fork.branches:
        raise TraceError(f"Fork of session {fork.session} names steps not in trace.db "
                         f"({', '.join(missing) or 'no branches'}); detect forks again.")
    return graph.choose(fork.branches)


def consensus(db: TraceDB | sqlite3.Connection, goal: str) -> Consensus:
    """The conclusion most published sessions of `goal` reached.

    A session's conclusion is the `conclusion` step at the end of its chain, following
    `choose_branch` at every fork. The winner has the most sessions behind it; ties go to
    the smallest sha256 of the conclusion text. `support` = supporters / routes, where
    routes are all published sessions of the goal, concluded or not.
    """
    conn = as_connection(db)
    routes = conn.execute(f"SELECT count(DISTINCT session) FROM steps WHERE goal = ? AND "
                          f"{PUBLISHED}", (goal,)).fetchone()[0]
    forked = {fork.session for fork in detect_forks(conn, goal)}
    conclusions = {session: content for session, content in conn.execute(
        f"SELECT session, content FROM steps s WHERE goal = ? AND kind = 'conclusion' AND "
        f"{PUBLISHED} AND NOT EXISTS (SELECT 1 FROM steps c WHERE c.parent = s.hash)", (goal,))
        if session not in forked}
    for session in sorted(forked):
        if conn.execute(f"SELECT 1 FROM steps WHERE session = ? AND {PUBLISHED} LIMIT 1",
                        (session,)).fetchone() is None:
            continue
        tip = _SessionGraph(load_steps(conn, session)).resolved_tip()
        if tip is not None and tip.kind == "conclusion":
            conclusions[session] = tip.content
    if not conclusions:
        return Consensus(goal, None, 0, routes, 0.0)
    tally = Counter(conclusions.values())
    winner, supporters = min(tally.items(), key=lambda item: (-item[1], content_hash(item[0])))
    return Consensus(goal, winner, supporters, routes, supporters / routes)


# --- shared with snapshots.py, so a snapshot is held to the same rules as a segment ----------

def load_manifest(path: Path, fields: frozenset[str] | set[str],
                  bad: Callable[[str], SegmentError]) -> dict:
    """A manifest's JSON, small and with exactly `fields`; `bad(why)` makes the error."""
    try:
        if path.stat().st_size > MANIFEST_MAX_BYTES:
            raise bad("is too large to be a manifest")
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        raise bad("cannot be read as JSON") from None
    if not isinstance(manifest, dict) or set(manifest) != fields:
        raise bad(f"does not have exactly the fields {', '.join(sorted(fields))}")
    return manifest


def check_signed_file(manifest_path: Path, manifest: Mapping, trusted: Mapping[str, Ed25519PublicKey],
                      kind: str, again: str) -> Path:
    """The checks segments and snapshots share, cheap first: a trusted node, its signature,
    then the file it names, present and with the signed sha256. Returns the file's path."""
    node = manifest["node"]
    public = trusted.get(node)
    if public is None:
        raise SegmentError("untrusted_node", f"{kind} manifest {manifest_path} comes from "
                           f"{node!r}, which is not in trusted.toml; add the node or remove the file.")
    if not manifest_signature_ok(manifest, public):
        raise SegmentError("bad_signature", f"The signature of {kind.lower()} manifest {manifest_path} "
                           f"does not verify with {node}'s key; it was altered or forged, remove it.")
    db_path = manifest_path.with_name(manifest["file"])
    if not db_path.is_file():
        raise SegmentError("missing_file", f"{kind} {db_path} named by {manifest_path} is not "
                           "here yet; wait for Syncthing to finish and try again.")
    if file_sha256(db_path) != manifest["sha256"]:
        raise SegmentError("sha_mismatch", f"{kind} {db_path} does not match the sha256 in its "
                           f"manifest; it is incomplete or altered, wait for Syncthing or ask "
                           f"{node} to {again}.")
    return db_path



def add_step_hash_function(conn: sqlite3.Connection) -> None:
    """Register the SQL function `step_hash(session, goal, parent, author, ts, kind, content)`."""
    conn.create_function("step_hash", 7, _sql_step_hash, deterministic=True)


def steps_schema_ok(conn: sqlite3.Connection, schema: str = "main") -> bool:
    """True when `<schema>.steps` has exactly the columns twinsync writes."""
    return _steps_schema(conn, schema) == _expected_schema()


def sign_manifest(manifest: Mapping[str, object], key: Ed25519PrivateKey) -> dict[str, object]:
    """A copy of `manifest` whose "sig" is the node's signature over canonical JSON of the rest."""
    unsigned = {k: v for k, v in manifest.items() if k != "sig"}
    return {**unsigned, "sig": keys.sign(key, canonical_json(unsigned))}


def manifest_signature_ok(manifest: Mapping[str, object], public: Ed25519PublicKey) -> bool:
    """True when the manifest's "sig" verifies with `public` over everything else in it."""
    unsigned = {k: v for k, v in manifest.items() if k != "sig"}
    signature = manifest.get("sig")
    return isinstance(signature, str) and keys.verify(public, canonical_json(unsigned), signature)


def manifest_bytes(manifest: Mapping[str, object]) -> bytes:
    """How manifests are written: indented, sorted, one trailing newline."""
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
