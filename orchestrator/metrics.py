"""This node's seed metrics (DESIGN §5) gathered from disk: frame counts from state.db,
the peers' fingerprints, the trace, the asks answered over the link; and their history for
the TUI. `folders.metrics` computes, this module reads. Kept apart from `recovery` so that
`status` and the TUI's metrics tab do not import the publish, merge and restore machinery.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from folders.fingerprint import FINGERPRINT_NAME, FingerprintView, compare, read_fingerprint
from folders.metrics import Metrics, compute_metrics, frames_root
from folders.consensus import GoalTally, TallyBook, update_tallies
from folders.trace import connect
from orchestrator.node import Node
from orchestrator.state import read_state, write_state
from orchestrator.topology import load_topology


@dataclass(frozen=True)
class FrameCounts:
    total: int
    in_conflict: int
    invalid: int
    root: str


def frame_counts(node: Node) -> FrameCounts:
    """Counts for the metrics; the frames root covers only namespaces every node holds, so
    a sharded or p2p topology does not read as disagreement."""
    local = tuple(f"{ns}/" for ns in load_topology(node).namespaces)
    db = read_state(node.layout.state_db)
    try:
        valid = [(r[0], r[1]) for r in db.execute("SELECT path, hash FROM frames WHERE status = 'valid'")]
        invalid = db.execute("SELECT count(*) FROM frames WHERE status = 'invalid'").fetchone()[0]
        conflicts = db.execute("SELECT count(DISTINCT path) FROM conflicts WHERE kind IN ('conflict', 'deleted') "
                               "AND status = 'open'").fetchone()[0]
    finally:
        db.close()
    shared = [(path, digest) for path, digest in valid if not path.startswith(local)] if local else valid
    return FrameCounts(len(valid) + invalid, conflicts, invalid, frames_root(shared))


def goal_tallies(node: Node, book: TallyBook | None = None) -> TallyBook:
    """Consensus for every goal of the trace: the metrics' scan of every step, or only of the
    goals that changed since `book`."""
    conn = connect(node.layout.trace_db)
    try:
        return update_tallies(conn, book)
    finally:
        conn.close()


def node_metrics(node: Node, counts: FrameCounts | None = None,
                 tallies: Mapping[str, GoalTally] | None = None) -> Metrics:
    """The seed metrics here; frames whose state differs across nodes are estimated from the
    fingerprints: when our frames root is not the majority's, the count gap (at least 1).
    `tallies`: `goal_tallies(node)` when the caller kept them (the daemon, while the trace
    is unchanged)."""
    counts = counts or frame_counts(node)
    views = read_fingerprints(node)
    agreement = compare(views)
    disagreeing = 0
    majority = agreement["majority_root"]
    if majority is not None and counts.root != majority:
        majority_counts = [v.fingerprint.frames_count for v in views
                           if v.ok and v.fingerprint.frames_root == majority]
        disagreeing = max(1, abs(counts.total - (majority_counts[0] if majority_counts else 0)))
    db = read_state(node.layout.state_db)
    try:
        asked = [row[0] for row in db.execute("SELECT ms FROM asks ORDER BY id DESC LIMIT ?", [ACCESS_SAMPLE])]
    finally:
        db.close()
    conn = connect(node.layout.trace_db)
    try:
        return compute_metrics(conn, frames_total=counts.total, frames_in_conflict=counts.in_conflict,
                               frames_invalid=counts.invalid, frames_disagreeing=min(disagreeing, counts.total),
                               asked_ms=asked, tallies=tallies)
    finally:
        conn.close()


#: The latest asks answered by peers whose round trips make the access metric.
ACCESS_SAMPLE = 100


def remember(node: Node, ts: str, values: dict[str, float | None], *,
             through: sqlite3.Connection | None = None) -> None:
    """Metrics history in state.db, for the TUI's sparklines. `through`: a connection to
    state.db to write it with (the daemon's fingerprint job passes the one whose
    `data_version` it watches, so that its own bookkeeping is not a change it must check)."""
    rows = [(ts, name, value) for name, value in values.items() if value is not None]
    with write_state(node.layout.state_db, through) as conn:
        conn.executemany("INSERT INTO metrics (ts, name, value) VALUES (?, ?, ?)", rows)


def metrics_history(node: Node, limit: int = 200) -> dict[str, list[tuple[str, float]]]:
    """Each metric's last `limit` values, oldest first."""
    db = read_state(node.layout.state_db)
    try:
        history: dict[str, list[tuple[str, float]]] = {}
        for name, in db.execute("SELECT DISTINCT name FROM metrics"):
            rows = db.execute("SELECT ts, value FROM metrics WHERE name = ? ORDER BY ts DESC LIMIT ?",
                              [name, limit]).fetchall()
            history[name] = [(ts, value) for ts, value in reversed(rows)]
        return history
    finally:
        db.close()


def read_fingerprints(node: Node, *, now: datetime | None = None) -> list[FingerprintView]:
    trusted = node.trusted_keys()
    stale_after = timedelta(seconds=node.config.traces.fingerprint_stale_s)
    root = node.layout.recovery_root
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return [read_fingerprint(p / FINGERPRINT_NAME, trusted, now=now, stale_after=stale_after)
            for p in folders]
