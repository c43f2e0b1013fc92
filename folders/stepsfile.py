"""Steps files: the SQLite files that carry steps between nodes (segments and snapshots).

Both kinds pass the one check here before any of their steps is merged, and both are
merged by the one attach-and-union here, so a segment and a snapshot follow the same
rules: opened read-only and immutable (nothing is ever written into a peer's folder),
SQLite's quick_check, exactly the objects twinsync writes (no extra table, view,
trigger or index), the row count the signed manifest claims, every step's hash
recomputes and every author is vouched for. The union is INSERT OR IGNORE by hash with
the hash and author checked again inside the INSERT, so a file changed after its check
can never bring a forged step in.

A check made only to merge next leaves the step hashes to the union (`hash_steps=False`):
the union then copies the steps with a bare INSERT while a second thread recomputes every
step's hash from the same file (SQLite runs the INSERT without the GIL, so the two use two
cores; the thread lives only inside the call, which joins it before returning), and refuses the whole file at the first hash that does not match, rolling the
transaction back: each step is hashed once, the verdict is the one the full check gives,
and a file replaced while this runs is caught by its identity (device, inode, size, mtime).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from folders.errors import TraceError
from folders.manifest import SegmentError
from folders.trace import STEP_COLUMNS, STEP_NOT_NULL, step_hash

COLUMNS = ", ".join(STEP_COLUMNS)
#: The arguments of the SQL function `step_hash`: every column but the hash itself.
HASHED = ", ".join(STEP_COLUMNS[1:])

Refuse = Callable[[str, str], SegmentError]


def readonly_uri(path: Path) -> str:
    """immutable=1: no locks, no journal, nothing written into the peer's receive-only folder."""
    return Path(path).resolve().as_uri() + "?mode=ro&immutable=1"


def map_private_copy(conn: sqlite3.Connection) -> None:
    """Let SQLite read `conn`'s file through memory maps, which makes full scans and
    integrity_check far cheaper. Only for a file of our own that nothing truncates: a page
    mapped past a truncated end kills the process (SIGBUS), so never for a peer's file."""
    conn.execute(f"PRAGMA mmap_size={1 << 40}")


def _sql_step_hash(session: object, goal: object, parent: object, author: object, ts: object,
                   kind: object, content: object) -> str | None:
    """`step_hash` for SQL; a value of the wrong type yields NULL, which never equals a hash."""
    texts = (session, goal, author, ts, kind, content)
    if not all(isinstance(v, str) for v in texts) or not (parent is None or isinstance(parent, str)):
        return None
    return step_hash(session, goal, parent, author, ts, kind, content)  # type: ignore[arg-type]


def add_step_hash_function(conn: sqlite3.Connection) -> None:
    """Register the SQL function `step_hash(session, goal, parent, author, ts, kind, content)`."""
    conn.create_function("step_hash", 7, _sql_step_hash, deterministic=True)


def steps_schema_ok(conn: sqlite3.Connection, schema: str = "main") -> bool:
    """True when `<schema>.steps` has exactly the columns twinsync writes."""
    expected = [(name, "TEXT", int(name in STEP_NOT_NULL), int(name == "hash"))
                for name in STEP_COLUMNS]
    found = [(name, type_.upper(), notnull, pk) for _, name, type_, notnull, _, pk in
             conn.execute(f"PRAGMA {schema}.table_info(steps)")]
    return found == expected


def schema_problem(conn: sqlite3.Connection, tables: Sequence[str], indexes: frozenset[str],
                   kind: str) -> str | None:
    """Why the file does not hold exactly `tables` and `indexes` (SQLite's own automatic
    indexes aside) with twinsync's steps table, or None. One rule for both kinds."""
    objects = conn.execute("SELECT type, name FROM sqlite_master "
                           "WHERE name NOT LIKE 'sqlite!_%' ESCAPE '!'").fetchall()
    extra = sorted(f"{type_} {name}" for type_, name in objects
                   if not (type_ == "table" and name in tables)
                   and not (type_ == "index" and name in indexes))
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        return f"holds {shown}, which a {kind} never carries"
    if {name for type_, name in objects if type_ == "table"} != set(tables) or not steps_schema_ok(conn):
        return "does not have the tables twinsync writes"
    return None


def check_steps_db(db_path: Path, rows: int, authors: list[str], refuse: Refuse,
                   schema: Callable[[sqlite3.Connection], str | None], authors_why: str,
                   extra: Callable[[sqlite3.Connection], None] = lambda conn: None,
                   hash_steps: bool = True, workers: int = 1) -> None:
    """The one check of a steps file, in SQL so memory stays flat: it opens read-only,
    passes quick_check, `schema` finds no problem, it holds the manifest's row count,
    passes `extra`, every step's hash recomputes (unless `hash_steps` is False: the union
    checks them) and every author is vouched for.

    `workers` > 1 hashes the steps in that many child processes (`StepHashes`), which
    map the file into memory: only for a private copy that nothing truncates."""
    try:
        conn = sqlite3.connect(readonly_uri(db_path), uri=True)
    except sqlite3.DatabaseError:
        raise refuse("corrupt_db", "cannot be opened as SQLite") from None
    try:
        add_step_hash_function(conn)
        with StepHashes(db_path, conn, workers if hash_steps else 1) as hashes:
            try:
                check = [row[0] for row in conn.execute("PRAGMA quick_check")]
            except sqlite3.DatabaseError:
                raise refuse("corrupt_db", "is not a readable SQLite database") from None
            if check != ["ok"]:
                raise refuse("corrupt_db", f"fails SQLite's quick_check ({check[0]})")
            problem = schema(conn)
            if problem:
                raise refuse("bad_schema", problem)
            held = conn.execute("SELECT count(*) FROM steps").fetchone()[0]
            if held != rows:
                raise refuse("row_count", f"holds {held} steps, its manifest says {rows}")
            extra(conn)
            bad = hashes.first_bad(conn) if hash_steps else None
        if bad is not None:
            raise bad_step_hash(refuse, bad)
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


#: The rowids a table can hold: a check over this range misses no row, whatever the file.
ALL_ROWS = (-(1 << 63), (1 << 63) - 1)
#: Below this many steps one process hashes them: a child costs ~0.1 s to start.
CHILD_MIN_STEPS = 50_000
#: Rowid ranges per child process (`StepHashes`).
STRIPES = 4


def first_bad_step(conn: sqlite3.Connection, ranges: Sequence[tuple[int, int]] = (ALL_ROWS,)) -> str | None:
    """The first step, in rowid order over the [first, last] `ranges`, whose hash does not
    recompute, or None. `conn` needs `add_step_hash_function`."""
    for first, last in ranges:
        row = conn.execute(f"SELECT hash FROM steps WHERE rowid BETWEEN ? AND ? AND "
                           f"step_hash({HASHED}) IS NOT hash LIMIT 1", (first, last)).fetchone()
        if row is not None:
            return str(row[0])
    return None


def rowid_ranges(low: int, high: int, parts: int) -> list[tuple[int, int]]:
    """[first, last] ranges, in order, that together are exactly ALL_ROWS, cut so that
    the rowids from `low` to `high` fall about evenly into `parts` of them."""
    span = high - low + 1
    cuts = sorted({low + span * k // parts for k in range(1, parts)} - {ALL_ROWS[0]})
    starts = [ALL_ROWS[0], *cuts]
    return [(start, end - 1) for start, end in zip(starts, [*cuts, ALL_ROWS[1] + 1])]


class StepHashes:
    """Every step's hash recomputed by child processes, each over its share of interleaved
    rowid ranges, started on entry so they hash while the caller makes its other checks.

    Hashing is Python per step and holds the GIL (a 1 GB snapshot: 7 s on one core), so
    only processes spread it over cores. A child is a fresh interpreter
    (`python -m folders.stephashes`), not a fork: the TUI forks from a process whose
    other threads may hold SQLite's locks. A child that cannot start, fails or answers
    nonsense costs time, not a verdict: its ranges are hashed here instead. With `workers`
    1, or few steps, everything is hashed here."""

    def __init__(self, db_path: Path, conn: sqlite3.Connection, workers: int, *,
                 python: str = sys.executable, min_steps: int = CHILD_MIN_STEPS) -> None:
        self._children: list[tuple[list[tuple[int, int]], subprocess.Popen | None]] = []
        if workers <= 1:
            return
        try:
            low, high, held = conn.execute("SELECT min(rowid), max(rowid), count(*) FROM steps").fetchone()
        except sqlite3.DatabaseError:
            return  # the checks before hashing refuse it, with their own reason
        if held < min_steps:
            return
        map_private_copy(conn)
        # Steps that grow large late (long answers) sit together, so each child takes every
        # workers-th of 4 ranges per worker rather than one block: the work comes out even.
        ranges = rowid_ranges(low, high, workers * STRIPES)
        for k in range(workers):
            mine = ranges[k::workers]
            try:
                child = subprocess.Popen(
                    [python, "-I", "-m", "folders.stephashes", str(db_path),
                     *(str(bound) for rowids in mine for bound in rowids)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            except OSError:
                child = None
            self._children.append((mine, child))

    def __enter__(self) -> StepHashes:
        return self

    def __exit__(self, *exc: object) -> None:
        for _, child in self._children:
            if child is not None and child.returncode is None:  # not answered: not needed
                child.kill()
                child.communicate()

    def first_bad(self, conn: sqlite3.Connection) -> str | None:
        """A step whose hash does not recompute, or None when every one does."""
        if not self._children:
            return first_bad_step(conn)
        for ranges, child in self._children:
            answer = _answer(child)
            bad = answer[0] if answer is not None else first_bad_step(conn, ranges)
            if bad is not None:
                return bad
        return None


def _answer(child: subprocess.Popen | None) -> tuple[str | None] | None:
    """What a child found, as a 1-tuple; None when it gave no answer to trust."""
    if child is None:
        return None
    out, _ = child.communicate()
    try:
        found = json.loads(out)
    except ValueError:
        return None
    if child.returncode != 0 or not isinstance(found, dict) or not isinstance(found.get("bad", 0), str | None):
        return None
    return (found["bad"],)


def file_identity(path: Path) -> tuple[int, int, int, int]:
    """What changes when a file is replaced or rewritten: device, inode, size, mtime."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@contextmanager
def attached(conn: sqlite3.Connection, db_path: Path, alias: str,
             what: str) -> Iterator[tuple[int, int, int, int]]:
    """The steps file attached read-only as `alias` for the length of the block; yields its
    identity as it was just before it was attached."""
    try:
        identity = file_identity(db_path)
        conn.execute(f"ATTACH DATABASE ? AS {alias}", (readonly_uri(db_path),))
    except sqlite3.DatabaseError as exc:
        raise TraceError(f"Cannot open {what} {db_path} ({exc}); nothing was merged, verify "
                         "it again.") from None
    except OSError as exc:
        raise TraceError(f"Cannot read {what} {db_path} ({exc.strerror}); nothing was merged, "
                         "verify it again.") from None
    try:
        yield identity
    finally:
        conn.execute(f"DETACH DATABASE {alias}")


def bad_step_hash(refuse: Refuse, step: str) -> SegmentError:
    return refuse("bad_step_hash", f"holds step {step}, whose hash does not recompute")


def union_steps(conn: sqlite3.Connection, alias: str, authors: list[str], *, hashes_checked: bool,
                refuse: Refuse, db_path: Path, identity: tuple[int, int, int, int]) -> int:
    """INSERT OR IGNORE the attached file's steps by `authors` whose hash recomputes;
    returns the rows inserted. Call it inside a transaction; `identity` is what `attached`
    yielded for `db_path`.

    When the check before (`hashes_checked`) recomputed every hash, steps already here are
    skipped before hashing (CASE, because SQLite would run the subquery last): a node that
    bridges with a snapshot, or merges a segment a snapshot brought, mostly has them, and
    a step that no longer recomputes (the file changed since) is left out. Otherwise every
    step is hashed here, once, beside the INSERT, and the first that does not recompute
    raises `refuse`'s bad_step_hash, so the caller's transaction rolls back and nothing of
    the file is merged."""
    if len(authors) == 1:
        who, args = "author = ?", (authors[0],)
    else:
        who, args = "author IN (SELECT value FROM json_each(?))", (json.dumps(authors),)
    if hashes_checked:
        conn.execute(f"INSERT OR IGNORE INTO main.steps ({COLUMNS}) SELECT {COLUMNS} "
                     f"FROM {alias}.steps s WHERE {who} "
                     "AND CASE WHEN EXISTS (SELECT 1 FROM main.steps m WHERE m.hash = s.hash) "
                     f"THEN 0 ELSE step_hash({HASHED}) = hash END", args)
        return conn.execute("SELECT changes()").fetchone()[0]
    found: dict[str, object] = {}
    checker = threading.Thread(target=_find_bad_hash, args=(db_path, found), name="step-hashes", daemon=True)
    checker.start()
    try:
        conn.execute(f"INSERT OR IGNORE INTO main.steps ({COLUMNS}) SELECT {COLUMNS} "
                     f"FROM {alias}.steps WHERE {who}", args)
        inserted = conn.execute("SELECT changes()").fetchone()[0]
    finally:
        checker.join()
    if "bad" in found:
        raise bad_step_hash(refuse, str(found["bad"]))
    if "error" in found:
        raise refuse("corrupt_db", f"cannot be read ({found['error']})")
    try:
        unchanged = file_identity(db_path) == identity
    except OSError:
        unchanged = False
    if not unchanged:
        raise TraceError(f"{db_path} was replaced while it was being merged; nothing of it was "
                         "merged, the next merge takes it again.")
    return inserted


def _find_bad_hash(db_path: Path, found: dict[str, object]) -> None:
    """The first step of the file (in its order, as the full check reports) whose hash does
    not recompute, into found["bad"]; a read error into found["error"]."""
    try:
        conn = sqlite3.connect(readonly_uri(db_path), uri=True)
        try:
            add_step_hash_function(conn)
            bad = first_bad_step(conn)
            if bad is not None:
                found["bad"] = bad
        finally:
            conn.close()
    except sqlite3.Error as exc:
        found["error"] = exc


#: How `merged` records a seq whose steps a snapshot brought when the snapshot does not
#: say which segment they were in: "snapshot:<sha256 of the snapshot>".
BRIDGED_PREFIX = "snapshot:"


def is_bridged(recorded_sha256: str) -> bool:
    """True when a `merged` row says a snapshot, not the segment itself, brought the seq."""
    return recorded_sha256.startswith(BRIDGED_PREFIX)
