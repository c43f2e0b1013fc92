"""What the trace tests share: a clock that ticks, node keys, and a fresh trace.db."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import strategies as st

from folders import keys
from folders.trace import canonical_json, ensure_schema, step_hash

START = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)


class TickClock:
    """A real clock stand-in that moves `step` forward on every reading."""

    def __init__(self, start: datetime = START, step: timedelta = timedelta(seconds=1)) -> None:
        self.now, self.step = start, step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


def node_keys(*names: str) -> tuple[dict[str, Ed25519PrivateKey], dict[str, Ed25519PublicKey]]:
    """Signing keys for these nodes, and the trusted map every node would hold."""
    keys = {name: Ed25519PrivateKey.generate() for name in names}
    return keys, {name: key.public_key() for name, key in keys.items()}


def resign(manifest_path: Path, key: Ed25519PrivateKey, *, drop: tuple[str, ...] = (),
           **changes: object) -> None:
    """Rewrite a manifest with new fields (and without the fields in `drop`) and a valid
    signature by `key`: only the content checks can tell it from an honest one."""
    manifest = json.loads(manifest_path.read_text())
    manifest.update(changes)
    for name in (*drop, "sig"):
        manifest.pop(name)
    manifest["sig"] = keys.sign(key, canonical_json(manifest))
    manifest_path.write_text(json.dumps(manifest))


def new_trace(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ensure_schema(path)
    return path


def planned(root: Path, trace: Path, own: str) -> list[Path]:
    """The manifests the merge plan would merge or bridge next, in order."""
    from folders.mergeplan import Bridge, Merge, plan, survey
    return [a.segment.manifest_path if isinstance(a, Merge) else a.snapshot.manifest_path
            for actions in plan(survey(root, trace, own)).values() for a in actions
            if isinstance(a, (Merge, Bridge))]


def follow_plan(root: Path, trace: Path, own: str, trusted: dict) -> list[tuple[str, str, int]]:
    """Execute the merge plan the way orchestrator.recovery.merge_now does, without a node
    home: verify and merge each piece in order; a piece that fails goes back to the plan.
    Returns (kind, node, seq) of what was merged."""
    from folders.manifest import SegmentError
    from folders.mergeplan import Merge, plan, survey
    from folders.segments import merge_segment, verify_segment
    from folders.snapshots import merge_snapshot, verify_snapshot
    done, failed = [], {}
    while True:
        again = False
        for actions in plan(survey(root, trace, own), failed).values():
            for action in actions:
                if not hasattr(action, "segment") and not hasattr(action, "snapshot"):
                    continue
                piece = action.segment if isinstance(action, Merge) else action.snapshot
                verify, merge = ((verify_segment, merge_segment) if isinstance(action, Merge)
                                 else (verify_snapshot, merge_snapshot))
                try:
                    merge(trace, verify(piece.manifest_path, trusted))
                except SegmentError as exc:
                    failed[piece.manifest_path] = (exc.code, str(exc))
                    again = True
                    break
                done.append((piece.kind, piece.node, piece.seq))
        if not again:
            return done


#: Runs of changes to a trace, as merges and this node's own work make them: each a batch of
#: new steps (sessions mixing goals, forks, conclusions, by two authors), sessions moving
#: between published and not, and now and then a step removed (as only a replaced trace.db
#: shows). For the results the daemon keeps up to date instead of computing whole.
CHANGE_GOALS = ("g0", "g1", "g2", "decision:g0")
trace_changes = st.lists(st.tuples(
    st.lists(st.tuples(st.integers(0, 3),                # session
                       st.sampled_from(CHANGE_GOALS),     # goal (a session may mix them)
                       st.integers(0, 4),                 # parent: index into the session's steps
                       st.sampled_from(("a", "b")),       # author
                       st.booleans(),                     # conclusion?
                       st.sampled_from(("yes", "no"))), max_size=5),
    st.lists(st.tuples(st.integers(0, 3), st.sampled_from(("open", "finished", "published"))), max_size=3),
    st.booleans(),                                        # statuses before the steps?
    st.sampled_from(("add", "add", "add", "drop-first", "drop-last"))), min_size=1, max_size=6)


class TraceChanges:
    """Applies `trace_changes` batches to an open trace.db connection, one by one, starting
    from an empty trace (a module's scratch trace.db serves every example)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM steps")
        conn.execute("DELETE FROM sessions")
        self.conn = conn
        self.made: dict[str, list[str]] = {}
        self.n = 0

    def apply(self, batch: tuple) -> None:
        steps, statuses, statuses_first, how = batch
        if statuses_first:
            self._statuses(statuses)
        for s, goal, parent_at, author, concludes, content in steps:
            session = f"s{s}"
            earlier = self.made.setdefault(session, [])
            parent = earlier[parent_at] if parent_at < len(earlier) else None
            kind = "conclusion" if concludes else "inference"
            ts = f"2026-11-25T08:{self.n // 60:02d}:{self.n % 60:02d}.000000Z"
            self.n += 1
            h = step_hash(session, goal, parent, author, ts, kind, content)
            self.conn.execute("INSERT OR IGNORE INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              (h, session, goal, parent, author, ts, kind, content))
            earlier.append(h)
        if not statuses_first:
            self._statuses(statuses)
        if how != "add":
            self.conn.execute(f"DELETE FROM steps WHERE rowid = (SELECT {'min' if how == 'drop-first' else 'max'}"
                              "(rowid) FROM steps)")

    def _statuses(self, statuses: list[tuple[int, str]]) -> None:
        for s, state in statuses:
            self.conn.execute("INSERT INTO sessions (session, goal, author, status, head, started) "
                              "VALUES (?, 'g0', 'a', ?, 'x', 'x') ON CONFLICT(session) DO UPDATE SET status = ?",
                              (f"s{s}", state, state))
