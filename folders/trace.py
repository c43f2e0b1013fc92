"""trace.db: this node's reasoning as a content-addressed chain of steps (DESIGN §2 "Trace").

A step's hash covers every other field, so a step copied to any node can be checked there
without trusting the copier. A session is one node's linear chain of steps toward a goal,
from one root to a `conclusion`; `coherence_check` is the gate before it may be published.

Session ids are the first 32 hex digits of sha256 over canonical JSON of
{author, goal, started, nonce} with a random 64-bit nonce: unique without coordination,
and they say nothing a peer could not already read in the steps.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from json.encoder import encode_basestring as _encode_string  # json.dumps' own, ensure_ascii=False
from pathlib import Path
from typing import NamedTuple

from folders.errors import TraceError, echo
from folders.frame import canonical_json  # the one serialisation every node hashes

#: Bumped when the trace.db schema changes; a database of another version is refused.
SCHEMA_VERSION = 1
#: Long enough for a publish or a merge holding the write lock to finish.
BUSY_TIMEOUT_MS = 10_000
#: Page cache of a connection merging a steps file, in KiB (SQLite's default is 2 MiB). A
#: merge inserts into four indexes at random places; with the default cache SQLite spills
#: the same dirty pages into the WAL over and over within one transaction (3x the bytes
#: written). A fixed cap, reached by any segment, keeps peak RSS flat in the segment size.
MERGE_CACHE_KIB = 16_384
KINDS = frozenset(
    {"observation", "inference", "hypothesis", "conclusion", "decision", "question", "action"}
)
#: Column order of `steps`, in trace.db and in every segment.
STEP_COLUMNS = ("hash", "session", "goal", "parent", "author", "ts", "kind", "content")
STEP_SCHEMA: dict[str, type] = {name: str for name in STEP_COLUMNS}
STEP_NOT_NULL = frozenset(STEP_COLUMNS) - {"parent"}
#: The indexes `ensure_schema` creates; a snapshot carries them and nothing else.
TRACE_INDEXES = frozenset({"steps_goal", "steps_session", "steps_parent", "sessions_status"})

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def format_ts(moment: datetime) -> str:
    """Fixed-width UTC text, so comparing strings in SQL compares instants."""
    if moment.tzinfo is None:
        raise TraceError("The clock returned a time without a time zone; pass a clock that "
                         "returns aware UTC datetimes, e.g. lambda: datetime.now(timezone.utc).")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def step_hash(session: str, goal: str, parent: str | None, author: str, ts: str, kind: str,
              content: str) -> str:
    """sha256 of the canonical JSON of the step's fields.

    Merging verifies every step, so this runs a million times per million steps: for the
    usual all-text fields it writes the canonical form directly (keys in sorted order,
    strings escaped exactly as `json.dumps(..., ensure_ascii=False)` does), 3x faster than
    building a dict for `canonical_json`; anything else takes the general path. A property
    test checks both give the same bytes."""
    if (isinstance(session, str) and isinstance(goal, str) and isinstance(author, str)
            and isinstance(ts, str) and isinstance(kind, str) and isinstance(content, str)
            and (parent is None or isinstance(parent, str))):
        quote = _encode_string
        text = (f'{{"author":{quote(author)},"content":{quote(content)},"goal":{quote(goal)},'
                f'"kind":{quote(kind)},"parent":{"null" if parent is None else quote(parent)},'
                f'"session":{quote(session)},"ts":{quote(ts)}}}')
        data = text.encode("utf-8")
    else:
        data = canonical_json({"session": session, "goal": goal, "parent": parent, "author": author,
                               "ts": ts, "kind": kind, "content": content})
    return "sha256:" + hashlib.sha256(data).hexdigest()


def content_hash(text: str) -> str:
    """Orders conclusions by something every node computes the same way."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Step:
    hash: str
    session: str
    goal: str
    parent: str | None
    author: str
    ts: str
    kind: str
    content: str

    def recomputes(self) -> bool:
        return step_hash(self.session, self.goal, self.parent, self.author, self.ts, self.kind,
                         self.content) == self.hash


class GoalSummary(NamedTuple):
    goal: str
    sessions: int
    steps: int


class SessionSummary(NamedTuple):
    """One route toward a goal; `status` is "published" for every session merged from a peer."""

    session: str
    author: str
    started: str
    steps: int
    status: str
    conclusion: str | None


@dataclass(frozen=True)
class Problem:
    """Why a session is not coherent; `code` is stable, `message` is for people."""

    code: str
    message: str


def ensure_schema(path: Path) -> None:
    """Create or upgrade-check trace.db; safe to run on every start."""
    import sqlite_utils  # imported here: reading a trace or a time never needs it

    path = Path(path)
    conn = _open(path, create=True)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise TraceError(f"{path} has trace schema version {version}, this twinsync knows "
                             f"{SCHEMA_VERSION}; upgrade twinsync on this node.")
        conn.execute("PRAGMA journal_mode=WAL")
        db = sqlite_utils.Database(conn)
        steps = db["steps"]
        steps.create(STEP_SCHEMA, pk="hash", not_null=STEP_NOT_NULL, if_not_exists=True)
        steps.create_index(["goal"], "steps_goal", if_not_exists=True)
        # (session, parent) also serves every lookup by session alone.
        steps.create_index(["session", "parent"], "steps_session", if_not_exists=True)
        steps.create_index(["parent"], "steps_parent", if_not_exists=True)
        db["sessions"].create(
            {"session": str, "goal": str, "author": str, "status": str, "head": str,
             "started": str, "finished": str, "published_seq": int},
            pk="session", not_null={"goal", "author", "status", "head", "started"},
            if_not_exists=True,
        )
        db["sessions"].create_index(["status"], "sessions_status", if_not_exists=True)
        db["publish_log"].create(
            {"seq": int, "first": int, "last": int, "rows": int, "file": str, "sha256": str,
             "created": str},
            pk="seq", not_null={"first", "last", "rows", "file", "sha256", "created"},
            if_not_exists=True,
        )
        db["merged"].create(
            {"node": str, "seq": int, "sha256": str, "rows": int, "merged": str},
            pk=("node", "seq"), not_null={"sha256", "rows", "merged"}, if_not_exists=True,
        )
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except sqlite3.DatabaseError as exc:
        raise TraceError(f"Cannot prepare the trace database {path} ({exc}); check the disk, "
                         "or restore trace.db from a snapshot.") from None
    finally:
        conn.close()


def connect(path: Path) -> sqlite3.Connection:
    """Open an existing trace.db in autocommit mode; callers write inside `write_transaction`."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"There is no trace database at {path}; run `twinsync init` first.")
    conn = _open(path, create=False)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError:
        version = None
    if version != SCHEMA_VERSION:
        conn.close()
        raise TraceError(f"{path} is not a twinsync trace database of schema version "
                         f"{SCHEMA_VERSION}; check the path, or restore trace.db from a snapshot.")
    return conn


def _open(path: Path, create: bool) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None, uri=True)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    except sqlite3.DatabaseError as exc:
        verb = "create" if create else "open"
        raise TraceError(f"Cannot {verb} the trace database {path} ({exc}); check the path "
                         "and its permissions.") from None
    return conn


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`BEGIN IMMEDIATE` ... `COMMIT`: one writer at a time, and a crash leaves before or after."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class TraceDB:
    """This node's side of trace.db: start sessions, append steps, finish, ask."""

    def __init__(self, path: Path, author: str, clock: Clock = utc_now) -> None:
        self.path = Path(path)
        self.author = author
        self.clock = clock
        self.connection = connect(self.path)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> TraceDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_session(self, goal: str, content: str | None = None, kind: str = "question") -> str:
        """Write the root step; its content defaults to the goal itself."""
        _check_kind(kind, self.path)
        started = format_ts(self.clock())
        nonce = secrets.token_hex(8)
        session = hashlib.sha256(canonical_json(
            {"author": self.author, "goal": goal, "started": started, "nonce": nonce})).hexdigest()[:32]
        with write_transaction(self.connection) as conn:
            root = self._insert(conn, session, goal, None, started, kind,
                                goal if content is None else content)
            conn.execute("INSERT INTO sessions (session, goal, author, status, head, started) "
                         "VALUES (?, ?, ?, 'open', ?, ?)", (session, goal, self.author, root, started))
        return session

    def append(self, session: str, kind: str, content: str, parent: str | None = None) -> str:
        """Append after `parent`, by default the session's head; an explicit parent may branch."""
        _check_kind(kind, self.path)
        with write_transaction(self.connection) as conn:
            return self._append(conn, session, kind, content, parent)

    def finish(self, session: str, conclusion: str) -> str:
        with write_transaction(self.connection) as conn:
            step = self._append(conn, session, "conclusion", conclusion, None)
            ts = conn.execute("SELECT ts FROM steps WHERE hash = ?", (step,)).fetchone()[0]
            conn.execute("UPDATE sessions SET status = 'finished', finished = ? WHERE session = ?",
                         (ts, session))
        return step

    def reopen(self, session: str) -> None:
        """Go on reasoning in a finished or published session of ours, from its recorded head.

        After a restore from an older snapshot the head is the snapshot's, so going on may
        fork the session; fr_conflict_resolver and trace-consensus then settle it.
        """
        with write_transaction(self.connection) as conn:
            row = conn.execute("SELECT author FROM sessions WHERE session = ?", (session,)).fetchone()
            if row is None or row[0] != self.author:
                raise TraceError(f"Session {echo(session, quoted=False)} is not one of {self.author}'s sessions in "
                                 f"{self.path}; only its author can go on with it.")
            conn.execute("UPDATE sessions SET status = 'open' WHERE session = ?", (session,))

    def session_steps(self, session: str) -> list[Step]:
        return load_steps(self.connection, session)

    def goals(self) -> list[GoalSummary]:
        rows = self.connection.execute(
            "SELECT goal, count(DISTINCT session), count(*) FROM steps GROUP BY goal ORDER BY goal")
        return [GoalSummary(*row) for row in rows]

    def query(self, goal: str) -> list[SessionSummary]:
        """Every route toward `goal`, oldest first; served by the goal and session indexes."""
        rows = self.connection.execute(
            """
            SELECT s.session,
                   (SELECT r.author FROM steps r WHERE r.session = s.session AND r.parent IS NULL
                     ORDER BY r.hash LIMIT 1),
                   min(s.ts), count(*),
                   coalesce((SELECT l.status FROM sessions l WHERE l.session = s.session),
                            'published'),
                   (SELECT c.content FROM steps c WHERE c.session = s.session
                     AND c.kind = 'conclusion' ORDER BY c.ts DESC, c.hash LIMIT 1)
              FROM steps s WHERE s.goal = ? GROUP BY s.session ORDER BY min(s.ts), s.session
            """, (goal,))
        return [SessionSummary(*row) for row in rows]

    def _append(self, conn: sqlite3.Connection, session: str, kind: str, content: str,
                parent: str | None) -> str:
        row = conn.execute("SELECT goal, author, status, head FROM sessions WHERE session = ?",
                           (session,)).fetchone()
        if row is None:
            raise TraceError(f"Session {echo(session, quoted=False)} was not started in {self.path}; start a session "
                             "with `start_session` before appending to it.")
        goal, author, status, head = row
        if status != "open":
            raise TraceError(f"Session {echo(session, quoted=False)} in {self.path} is {status}; start a new session "
                             "to go on reasoning toward its goal.")
        if author != self.author:
            raise TraceError(f"Session {echo(session, quoted=False)} in {self.path} belongs to {author}, not "
                             f"{self.author}; open trace.db with the author that started it.")
        if parent is None:
            parent = head
        elif conn.execute("SELECT 1 FROM steps WHERE hash = ? AND session = ?",
                          (parent, session)).fetchone() is None:
            raise TraceError(f"Step {echo(parent, quoted=False)} is not part of session {echo(session, quoted=False)} in {self.path}; "
                             "pass a parent from `session_steps`.")
        last = conn.execute("SELECT max(ts) FROM steps WHERE session = ?", (session,)).fetchone()[0]
        ts = max(format_ts(self.clock()), format_ts(parse_ts(last) + timedelta(microseconds=1)))
        step = self._insert(conn, session, goal, parent, ts, kind, content)
        conn.execute("UPDATE sessions SET head = ? WHERE session = ?", (step, session))
        return step

    def _insert(self, conn: sqlite3.Connection, session: str, goal: str, parent: str | None,
                ts: str, kind: str, content: str) -> str:
        step = step_hash(session, goal, parent, self.author, ts, kind, content)
        conn.execute("INSERT INTO steps (hash, session, goal, parent, author, ts, kind, content) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (step, session, goal, parent, self.author, ts, kind, content))
        return step


def _check_kind(kind: str, path: Path) -> None:
    if kind not in KINDS:
        raise TraceError(f"Step kind {echo(kind)} is unknown in {path}; use one of "
                         f"{', '.join(sorted(KINDS))}.")


def as_connection(db: TraceDB | sqlite3.Connection) -> sqlite3.Connection:
    return db.connection if isinstance(db, TraceDB) else db


def load_steps(db: TraceDB | sqlite3.Connection, session: str) -> list[Step]:
    """A session's steps in time order; sessions are small, so a list is fine."""
    rows = as_connection(db).execute(
        f"SELECT {', '.join(STEP_COLUMNS)} FROM steps WHERE session = ? ORDER BY ts, hash",
        (session,))
    return [Step(*row) for row in rows]


def chain_steps(db: TraceDB | sqlite3.Connection, session: str) -> list[Step]:
    """The steps this node publishes for one of its sessions: its recorded head and every
    ancestor, oldest first. Other branches (merged from a copy of the session that went on
    elsewhere, e.g. before a restore) are not ours to publish again."""
    conn = as_connection(db)
    row = conn.execute("SELECT head FROM sessions WHERE session = ?", (session,)).fetchone()
    steps = load_steps(conn, session)
    if row is None or row[0] is None:
        return steps
    by_hash = {step.hash: step for step in steps}
    chain, current = [], by_hash.get(row[0])
    while current is not None and len(chain) <= len(steps):
        chain.append(current)
        current = by_hash.get(current.parent) if current.parent else None
    return chain[::-1]


def coherence_check(db: TraceDB | sqlite3.Connection, session: str,
                    steps: list[Step] | None = None) -> list[Problem]:
    """COHERENCE-CHECK (DESIGN §2); an empty list means the session may be published.

    `steps` narrows the check to those steps (the chain `chain_steps` returns)."""
    steps = load_steps(db, session) if steps is None else steps
    if not steps:
        return [Problem("empty", f"Session {session} has no steps; nothing to publish.")]
    by_hash = {step.hash: step for step in steps}
    problems = [Problem("bad_hash", f"Step {step.hash} of session {session} does not match its "
                        "content; the trace was edited, restore it from a snapshot.")
                for step in steps if not step.recomputes()]
    goals = {step.goal for step in steps}
    if len(goals) > 1:
        problems.append(Problem("mixed_goal", f"Session {session} mixes {len(goals)} goals; "
                                "a session reasons toward exactly one goal."))
    roots = [step for step in steps if step.parent is None]
    if not roots:
        problems.append(Problem("no_root", f"Session {session} has no root step; it cannot be "
                                "read from its start."))
    elif len(roots) > 1:
        problems.append(Problem("many_roots", f"Session {session} has {len(roots)} root steps; "
                                "keep one branch and start a new session for the other."))
    children: dict[str, list[Step]] = {}
    for step in steps:
        if step.parent is None:
            continue
        parent = by_hash.get(step.parent)
        if parent is None:
            problems.append(Problem("missing_parent", f"Step {step.hash} of session {session} "
                                    f"follows {step.parent}, which is not in the session; "
                                    "merge the segment that holds it first."))
            continue
        children.setdefault(parent.hash, []).append(step)
        if step.ts < parent.ts:
            problems.append(Problem("time_backwards", f"Step {step.hash} of session {session} is "
                                    "older than the step it follows; the trace was edited."))
    problems += [Problem("branching", f"Step {parent} of session {session} is followed by "
                         f"{len(kids)} steps; choose one branch before publishing.")
                 for parent, kids in children.items() if len(kids) > 1]
    if len(roots) == 1:
        reached = _reachable(roots[0].hash, children)
        if reached < len(steps):
            problems.append(Problem("unreachable", f"{len(steps) - reached} steps of session "
                                    f"{session} cannot be reached from its root."))
    tips = [step for step in steps if step.hash not in children]
    if not any(step.kind == "conclusion" for step in tips):
        problems.append(Problem("no_conclusion", f"Session {session} does not end in a "
                                "conclusion; finish it before publishing."))
    return problems


def _reachable(root: str, children: dict[str, list[Step]]) -> int:
    seen, todo = 0, [root]
    while todo:
        seen += 1
        todo.extend(child.hash for child in children.get(todo.pop(), ()))
    return seen
