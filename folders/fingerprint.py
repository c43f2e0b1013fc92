"""Node fingerprints: `trace/recovery/<node>/fingerprint.json`, one node's signed self-report.

A fingerprint says, at a moment, what a node holds (its frames root, its published trace)
and how it is doing (pending conflicts and forks, the four seed metrics), so every peer
can watch every node's quality without asking it (DESIGN §1, §5). It sits in the node's
own recovery folder, which only that node writes; the signature over canonical JSON of
every other field is what lets a peer trust it, and the folder name must match the node
it names, so a peer cannot pass off another node's genuine fingerprint as its own.

Format 2 adds `profile`: what the node knows, as folders/meaning.py's compact profile, so
questions can be routed to the peer nearest by meaning; being signed, a peer cannot
advertise knowledge in another node's name. Format 1 files (no profile) still read, and
rank last.

Reading never raises: a peer's file may be missing, half-arrived, forged or garbage, and
the TUI shows each of those as a problem code with a sentence, beside the nodes that are
fine.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from folders import keys
from folders.errors import TwinsyncError, echo
from folders.files import read_replicated, write_atomic
from folders.frame import canonical_json
from folders.layout import NODE_NAME_RE
from folders.metrics import METRIC_NAMES, Metrics
from folders.consensus import PUBLISHED
from folders.meaning import Profile, ProfileError
from folders.trace import Clock, TraceDB, as_connection, utc_now
from folders.tracemark import TraceMark, added_since, mark_now, reading

FINGERPRINT_VERSION = 2
#: Format 1 had no profile; its files still read (and verify: their fields are signed as is).
READABLE_VERSIONS = (1, 2)
FINGERPRINT_NAME = "fingerprint.json"
#: A fingerprint is a few kilobytes (its profile is most of it); much larger is not ours.
FINGERPRINT_MAX_BYTES = 64 * 1024
#: A node refreshes its fingerprint at every publish; one silent for longer is shown stale.
DEFAULT_STALE_AFTER = timedelta(hours=1)
CREATED_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")
_COUNTS = ("frames_count", "trace_steps", "trace_sessions", "pending_conflicts",
           "pending_forks")
_TEXTS = ("device_id", "version")
_OPTIONAL_TIMES = ("last_publish", "last_merge")
FIELDS = frozenset({"twinsync", "node", "device_id", "version", "created", "frames_root",
                    "frames_count", "trace_steps", "trace_sessions", "trace_head",
                    "last_publish", "last_merge", "pending_conflicts", "pending_forks",
                    "metrics", "sig"})
FIELDS_V2 = FIELDS | {"profile"}
#: Fields a fingerprint may leave out; left out when empty, so a node that runs no module
#: signs the same bytes as before the field existed, and older readers accept it.
OPTIONAL_FIELDS = frozenset({"modules", "link"})
MAX_MODULES = 100
PROBLEM_CODES = ("missing", "bad_json", "bad_schema", "untrusted_node", "bad_signature",
                 "wrong_node")


class FingerprintError(TwinsyncError):
    """A fingerprint cannot be made from the values given; the message names the value."""


@dataclass(frozen=True)
class Fingerprint:
    """One node's signed self-report; make one with `make_fingerprint`."""

    node: str
    device_id: str
    version: str  # the twinsync version that wrote it
    created: str  # UTC, e.g. 2026-11-25T08:00:00Z
    frames_root: str
    frames_count: int
    trace_steps: int  # published steps held, any author
    trace_sessions: int  # published sessions held, any author
    trace_head: str | None  # newest published step authored by `node`
    last_publish: str | None
    last_merge: str | None
    pending_conflicts: int
    pending_forks: int
    metrics: dict[str, float | None] = field(hash=False)
    sig: str
    twinsync: int = FINGERPRINT_VERSION
    profile: dict[str, Any] | None = field(default=None, hash=False)  # Profile.to_dict()
    #: "name version" of each module approved on the node, for routing by meaning.
    modules: tuple[str, ...] = ()
    #: The port this node's peer link listens on while its daemon runs (orchestrator/link.py);
    #: signed, so a peer cannot send this node's questions elsewhere.
    link: int | None = None

    def unsigned_dict(self) -> dict[str, Any]:
        """Every field but `sig`: exactly what the signature covers, in canonical JSON."""
        unsigned = {"twinsync": self.twinsync, "node": self.node, "device_id": self.device_id,
                    "version": self.version, "created": self.created,
                    "frames_root": self.frames_root, "frames_count": self.frames_count,
                    "trace_steps": self.trace_steps, "trace_sessions": self.trace_sessions,
                    "trace_head": self.trace_head, "last_publish": self.last_publish,
                    "last_merge": self.last_merge, "pending_conflicts": self.pending_conflicts,
                    "pending_forks": self.pending_forks, "metrics": dict(self.metrics),
                    **({"modules": list(self.modules)} if self.modules else {}),
                    **({"link": self.link} if self.link else {})}
        if self.twinsync >= 2:
            unsigned["profile"] = self.profile
        return unsigned

    def meaning(self) -> Profile | None:
        """The node's profile for routing by meaning; None from a format 1 fingerprint."""
        return None if self.profile is None else Profile.from_dict(self.profile)

    def to_dict(self) -> dict[str, Any]:
        return {**self.unsigned_dict(), "sig": self.sig}

    def to_bytes(self) -> bytes:
        """Indented for people who open the file; the signature does not depend on layout."""
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False)
                + "\n").encode("utf-8")

    def created_at(self) -> datetime:
        return _parse_utc(self.created)

    def verify(self, public: Ed25519PublicKey) -> bool:
        return keys.verify(public, canonical_json(self.unsigned_dict()), self.sig)


class TraceFacts(NamedTuple):
    """The trace.db part of a fingerprint; named as `make_fingerprint`'s parameters, so
    `make_fingerprint(..., **trace_facts(db, node)._asdict())` fills them in."""

    trace_steps: int
    trace_sessions: int
    trace_head: str | None
    last_publish: str | None
    last_merge: str | None


def trace_facts(db: TraceDB | sqlite3.Connection, node: str) -> TraceFacts:
    """Published steps and sessions (any author, so nodes that merged the same segments
    report the same numbers), `node`'s newest published step, and the last publish and
    merge times from trace.db's logs."""
    return update_facts(db, node).facts


@dataclass(frozen=True)
class FactsBook:
    """`trace_facts` and what they were counted from, so that `update_facts` reads only what
    changed: counting every step and finding the newest of this node's takes about 0.8 s
    on a 1M-step trace, after every merge."""

    facts: TraceFacts
    mark: TraceMark
    sessions: int  # distinct sessions of every step, published or not
    head: tuple[str, str, str] | None  # the node's newest published step: (ts, hash, session)


def update_facts(db: TraceDB | sqlite3.Connection, node: str, book: FactsBook | None = None) -> FactsBook:
    """`book` brought up to the trace as it is now, in one read transaction (None, or a book
    of another trace: counted whole). What is not published is this node's few unpublished
    sessions, so published = all − theirs, and only new steps and sessions published since
    can be a newer head, unless the head's own session stopped being published."""
    conn = as_connection(db)
    with reading(conn):
        now = mark_now(conn)
        if book is not None and book.mark == now:
            return _with_logs(conn, book)
        added = added_since(conn, book.mark, now) if book is not None else None
        hidden = json.dumps(sorted(now.unpublished))
        hidden_steps, hidden_sessions = conn.execute(
            "SELECT count(*), count(DISTINCT session) FROM steps WHERE session IN (SELECT value FROM json_each(?))",
            [hidden]).fetchone()
        if added is None:
            sessions = conn.execute("SELECT count(DISTINCT session) FROM steps").fetchone()[0]
        else:
            sessions = book.sessions + sum(
                conn.execute("SELECT 1 FROM steps WHERE session = ? AND rowid <= ? LIMIT 1",
                             (session, book.mark.upto)).fetchone() is None for session in added)
        if added is None or (book.head is not None and book.head[2] in now.unpublished):
            head = conn.execute(f"SELECT ts, hash, session FROM steps WHERE author = ? AND {PUBLISHED} "
                                "ORDER BY ts DESC, hash LIMIT 1", (node,)).fetchone()
        else:
            shown = json.dumps(sorted(book.mark.unpublished - now.unpublished))
            head = _newest([*([book.head] if book.head is not None else []), *(
                row for row in chain(
                    conn.execute("SELECT ts, hash, session FROM steps WHERE rowid > ? AND author = ?",
                                 (book.mark.upto, node)),
                    conn.execute("SELECT ts, hash, session FROM steps WHERE author = ? AND session IN "
                                 "(SELECT value FROM json_each(?))", (node, shown)))
                if row[2] not in now.unpublished)])
        facts = TraceFacts(now.steps - hidden_steps, sessions - hidden_sessions, head and head[1], None, None)
        return _with_logs(conn, FactsBook(facts, now, sessions, head))


def _newest(steps: list[tuple[str, str, str]]) -> tuple[str, str, str] | None:
    """What `ORDER BY ts DESC, hash LIMIT 1` picks: the latest time, and of steps at that
    time the smallest hash (`max` keeps the first of equals, and they come sorted by hash)."""
    return max(sorted(steps, key=lambda step: step[1]), key=lambda step: step[0], default=None)


def _with_logs(conn: sqlite3.Connection, book: FactsBook) -> FactsBook:
    """The last publish and merge: two lookups, read every time."""
    last_publish = conn.execute("SELECT max(created) FROM publish_log").fetchone()[0]
    last_merge = conn.execute("SELECT max(merged) FROM merged").fetchone()[0]
    return FactsBook(book.facts._replace(last_publish=last_publish, last_merge=last_merge), book.mark,
                     book.sessions, book.head)


def make_fingerprint(*, node: str, device_id: str, version: str, frames_root: str,
                     frames_count: int, trace_steps: int, trace_sessions: int,
                     trace_head: str | None, last_publish: str | None, last_merge: str | None,
                     pending_conflicts: int, pending_forks: int,
                     metrics: Metrics | Mapping[str, float | None], key: Ed25519PrivateKey,
                     profile: Profile | None = None, clock: Clock = utc_now,
                     modules: Iterable[str] = (), link: int | None = None) -> Fingerprint:
    """Build and sign a fingerprint; every value is checked as a reader would check it."""
    moment = clock()
    if moment.tzinfo is None:
        raise FingerprintError("The clock returned a time without a time zone; pass a clock "
                               "that returns aware UTC datetimes.")
    values = metrics.summary() if isinstance(metrics, Metrics) else dict(metrics)
    # Rounded so the file reads well; six decimals keep every seed threshold exact.
    values = {name: round(value, 6) if isinstance(value, float) and math.isfinite(value)
              else value for name, value in values.items()}
    unsigned = {"twinsync": FINGERPRINT_VERSION, "node": node, "device_id": device_id,
                "version": version,
                "created": moment.astimezone(timezone.utc).strftime(CREATED_FORMAT),
                "frames_root": frames_root, "frames_count": frames_count,
                "trace_steps": trace_steps, "trace_sessions": trace_sessions,
                "trace_head": trace_head, "last_publish": last_publish,
                "last_merge": last_merge, "pending_conflicts": pending_conflicts,
                "pending_forks": pending_forks, "metrics": values,
                "profile": None if profile is None else profile.to_dict(),
                **({"modules": sorted(modules)} if modules else {}),
                **({"link": link} if link else {})}
    why = _schema_problem({**unsigned, "sig": ""})
    if why is not None:
        raise FingerprintError(f"Cannot make the fingerprint of {node!r}: its {why}; "
                               "pass the value as the node computed it.")
    return _from_dict({**unsigned, "sig": keys.sign(key, canonical_json(unsigned))})


def write_fingerprint(path: Path, fp: Fingerprint) -> None:
    """Replace `path` atomically, so Syncthing never ships half a fingerprint."""
    path = Path(path)
    if path.parent.name != fp.node:
        raise FingerprintError(f"Fingerprint of {fp.node!r} would be written to {path}, whose "
                               f"folder is not named {fp.node!r}; write it into the node's own "
                               "recovery folder.")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, fp.to_bytes())


@dataclass(frozen=True)
class FingerprintProblem:
    """Why a fingerprint file is not usable; `code` is one of PROBLEM_CODES."""

    code: str
    message: str


@dataclass(frozen=True)
class FingerprintView:
    """What a reader makes of one fingerprint file: usable or not, and why, and how fresh.

    `node` is the folder's name, so a row can be shown even when the file is unusable;
    `stale` is True unless the fingerprint is usable and no older than `stale_after`.
    """

    path: Path
    node: str
    ok: bool
    problem: FingerprintProblem | None
    fingerprint: Fingerprint | None
    stale: bool
    age: timedelta | None


def read_fingerprint(path: Path, trusted: Mapping[str, Ed25519PublicKey], *,
                     now: datetime | None = None,
                     stale_after: timedelta = DEFAULT_STALE_AFTER) -> FingerprintView:
    """Read and check a fingerprint file; never raises for what is in (or not in) the file."""
    path = Path(path)
    folder = path.parent.name

    def refuse(code: str, message: str) -> FingerprintView:
        return FingerprintView(path, folder, False, FingerprintProblem(code, message), None,
                               True, None)

    try:
        data = read_replicated(path, FINGERPRINT_MAX_BYTES + 1)
    except OSError as exc:
        return refuse("missing", f"Fingerprint {path} is missing or unreadable "
                      f"({exc.strerror}); wait for Syncthing, or let {folder} publish again.")
    if len(data) > FINGERPRINT_MAX_BYTES:
        return refuse("bad_json", f"Fingerprint {path} is too large to be a fingerprint; "
                      "remove it and let its node publish again.")
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return refuse("bad_json", f"Fingerprint {path} is not valid JSON; it may still be "
                      "arriving, wait for Syncthing or let its node publish again.")
    why = _schema_problem(parsed)
    if why is not None:
        return refuse("bad_schema", f"Fingerprint {path} is not a twinsync fingerprint: its "
                      f"{why}; let its node publish again with a matching twinsync.")
    fp = _from_dict(parsed)
    public = trusted.get(fp.node)
    if public is None:
        return refuse("untrusted_node", f"Fingerprint {path} comes from {fp.node!r}, which is "
                      "not in trusted.toml; pair with the node or remove the file.")
    if not fp.verify(public):
        return refuse("bad_signature", f"The signature of fingerprint {path} does not verify "
                      f"with {fp.node}'s key; it was altered or forged, remove it.")
    if fp.node != folder:
        return refuse("wrong_node", f"Fingerprint {path} is {fp.node}'s but sits in the folder "
                      f"of {folder!r}; a node may only report for itself, remove the file.")
    moment = utc_now() if now is None else now
    age = moment - fp.created_at()
    return FingerprintView(path, folder, True, None, fp, age > stale_after, age)


def compare(views: Iterable[FingerprintView]) -> dict[str, Any]:
    """Which nodes' frames roots agree with the majority of usable fingerprints.

    The majority root is the one most nodes report; a tie goes to the smallest root, so
    every node draws the same picture. Returns `majority_root` (None when no fingerprint
    is usable), sorted `agreeing`, `disagreeing` and `unknown` (unusable) node lists, and
    `by_node`: node → True (agrees), False (disagrees) or None (unknown). One view per
    node counts; a later view of the same node replaces an earlier one.
    """
    roots: dict[str, str | None] = {}
    for view in views:
        roots[view.node] = view.fingerprint.frames_root if view.ok and view.fingerprint else None
    tally = Counter(root for root in roots.values() if root is not None)
    majority = min(tally.items(), key=lambda item: (-item[1], item[0]))[0] if tally else None
    by_node = {node: None if root is None else root == majority
               for node, root in sorted(roots.items())}
    return {"majority_root": majority,
            "agreeing": [n for n, agrees in by_node.items() if agrees is True],
            "disagreeing": [n for n, agrees in by_node.items() if agrees is False],
            "unknown": [n for n, agrees in by_node.items() if agrees is None],
            "by_node": by_node}


# --- checking ---------------------------------------------------------------------------

def _schema_problem(data: Any) -> str | None:
    """None when `data` has every field with its type and form; else what is wrong."""
    if not isinstance(data, dict):
        return "content is not a JSON object"
    version = data.get("twinsync")
    if type(version) is not int or version not in READABLE_VERSIONS:
        return (f"format version is {echo(version)}, this twinsync reads "
                f"{' and '.join(map(str, READABLE_VERSIONS))}")
    fields = FIELDS if version == 1 else FIELDS_V2
    if set(data) - OPTIONAL_FIELDS != fields:
        missing, extra = fields - set(data), set(data) - fields - OPTIONAL_FIELDS
        return (f"fields differ (missing: {', '.join(sorted(missing)) or 'none'}; "
                f"unexpected: {echo(', '.join(sorted(map(str, extra))) or 'none', quoted=False)})")
    if not isinstance(data["node"], str) or not NODE_NAME_RE.match(data["node"]):
        return f"node {echo(data['node'])} is not a node name"
    for name in _TEXTS:
        if not isinstance(data[name], str) or not data[name] or len(data[name]) > 200:
            return f"{name} is not a short non-empty string"
    if not isinstance(data["sig"], str):
        return "sig is not a string"
    if not _is_utc(data["created"]):
        return f"created {echo(data['created'])} is not a UTC time like 2026-11-25T08:00:00Z"
    for name in _OPTIONAL_TIMES:
        if data[name] is not None and not _is_utc(data[name]):
            return f"{name} {echo(data[name])} is neither null nor a UTC time"
    if not isinstance(data["frames_root"], str) or not _SHA256.fullmatch(data["frames_root"]):
        return "frames_root is not a 'sha256:<64 hex>' digest"
    head = data["trace_head"]
    if head is not None and (not isinstance(head, str) or not _SHA256.fullmatch(head)):
        return "trace_head is neither null nor a 'sha256:<64 hex>' step hash"
    for name in _COUNTS:
        if type(data[name]) is not int or data[name] < 0:
            return f"{name} {echo(data[name])} is not a count"
    modules = data.get("modules", [])
    if (not isinstance(modules, list) or len(modules) > MAX_MODULES
            or not all(isinstance(m, str) and 0 < len(m) <= 100 for m in modules)):
        return f"modules is not a list of at most {MAX_MODULES} short texts"
    link = data.get("link")
    if link is not None and (type(link) is not int or not 0 < link < 65536):
        return f"link {echo(link)} is not a port number"
    metrics = data["metrics"]
    if not isinstance(metrics, dict) or set(metrics) != set(METRIC_NAMES):
        return f"metrics is not an object with exactly {', '.join(METRIC_NAMES)}"
    for name, value in metrics.items():
        if value is not None and (type(value) not in (int, float) or not math.isfinite(value)
                                  or value < 0):
            return f"metric {name} {echo(value)} is neither null nor a finite number of zero or more"
    if data.get("profile") is not None:
        try:
            Profile.from_dict(data["profile"])
        except ProfileError as exc:
            return f"profile is malformed ({exc})"
    return None


def _is_utc(value: Any) -> bool:
    if not isinstance(value, str) or not _UTC.fullmatch(value):
        return False
    try:
        _parse_utc(value)
    except ValueError:
        return False
    return True


def _parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def _from_dict(data: Mapping[str, Any]) -> Fingerprint:
    return Fingerprint(**{name: data[name] for name in FIELDS if name != "metrics"},
                       metrics=dict(data["metrics"]), profile=data.get("profile"),
                       modules=tuple(data.get("modules", ())), link=data.get("link"))
