"""Flows 3, 4 and 6 of DESIGN §3 as services: publish (segment, snapshot, retention,
fingerprint), merge (verify, then union, in each node's sequence order), node fingerprints,
snapshots and restore. The daemon runs publish and merge on a schedule; the CLI and the
TUI call the same functions."""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from folders.errors import TraceError
from folders.fingerprint import (FINGERPRINT_NAME, FingerprintView, compare, make_fingerprint,
                                 read_fingerprint, trace_facts, write_fingerprint)
from folders.metrics import Metrics, compute_metrics, frames_root
from folders.segments import SegmentError, merge_segment, publish, verify_segment
from folders.snapshots import (SEGMENTS_DIR, SNAPSHOTS_DIR, SnapshotInfo, VerifiedSnapshot,
                               due_for_snapshot, list_snapshots, make_snapshot, merge_snapshot,
                               prune, restore_snapshot, segments_after, snapshots_to_catch_up,
                               verify_snapshot)
from folders.trace import connect, parse_ts, utc_now
from orchestrator.node import Node
from orchestrator.state import open_state, stamp
from orchestrator.topology import load_topology
from orchestrator.traces import forks
from syncthing.errors import SyncthingError
from syncthing.folderspec import recovery_folder_id

logger = logging.getLogger(__name__)

#: Codes that mean "not here yet" (Syncthing may deliver a manifest before its .db), not "bad".
WAITING_CODES = {"missing_file"}
#: "Older than what is merged": a snapshot already brought these steps (its signed `merged`
#: claims cover them, even for this node's own segments after a restore), so it is skipped,
#: and must not hold up that node's newer segments.
COVERED_CODES = {"replay"}


@dataclass
class PublishReport:
    segment: str | None = None
    steps: int = 0
    snapshot: str | None = None
    pruned: int = 0


def publish_now(node: Node, *, clock: Callable[[], datetime] = utc_now) -> PublishReport:
    """Coherent finished sessions → a new signed segment; a snapshot when one is due; old
    ones pruned; the fingerprint refreshed; Syncthing asked to scan at once."""
    settings = node.config.traces
    out = node.layout.recovery(node.name)
    key = node.signing_key()
    report = PublishReport()
    segment = publish(node.layout.trace_db, out / SEGMENTS_DIR, node.name, key, clock=clock)
    if segment is not None:
        report.segment, report.steps = segment.manifest_path.name, segment.rows
        logger.info("published %s (%d steps)", segment.manifest_path.name, segment.rows)
    if due_for_snapshot(out, settings.snapshot_every_segments, settings.snapshot_every_minutes, clock()):
        snapshot = make_snapshot(node.layout.trace_db, out / SNAPSHOTS_DIR, node.name, key, clock=clock)
        report.snapshot = snapshot.manifest_path.name
        report.pruned = len(prune(out, settings.keep_snapshots))
        logger.info("snapshot %s (%d steps), pruned %d file(s)", snapshot.path.name, snapshot.rows, report.pruned)
    refresh_fingerprint(node, clock=clock)
    _announce(node, node.name)
    return report


@dataclass
class MergeReport:
    merged: list[tuple[str, int, int]] = field(default_factory=list)  # node, seq, rows
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # file, code, reason
    waiting: list[str] = field(default_factory=list)
    covered: list[str] = field(default_factory=list)


def merge_now(node: Node, *, clock: Callable[[], datetime] = utc_now,
              progress: Callable[[int, int], None] | None = None) -> MergeReport:
    """Verify then merge what peers published, snapshots first (to bridge pruned segments),
    each node in sequence order; a refused or missing piece stops that node's queue so a
    later segment can never jump the gap."""
    trusted = node.trusted_keys()
    trace_db = node.layout.trace_db
    root = node.layout.recovery_root
    report = MergeReport()
    latencies: list[float] = []
    blocked: set[str] = set()
    work = [(p, verify_snapshot, merge_snapshot) for p in snapshots_to_catch_up(root, trace_db, node=node.name)]
    work += [(p, verify_segment, merge_segment) for p in segments_after(root, trace_db, node=node.name)]
    for done, (manifest, verify, merge) in enumerate(work):
        if progress is not None:
            progress(done, len(work))
        owner = manifest.parent.parent.name
        if owner in blocked:
            continue
        try:
            verified = verify(manifest, trusted)
            rows = merge(trace_db, verified, clock=clock)
        except SegmentError as exc:
            if exc.code in COVERED_CODES:
                report.covered.append(str(manifest))
                continue
            blocked.add(owner)
            if exc.code in WAITING_CODES:
                report.waiting.append(str(manifest))
                continue
            report.refused.append((str(manifest), exc.code, str(exc)))
            _note_refusal(node, manifest, exc, clock)
            continue
        report.merged.append((verified.node, verified.seq, rows))
        latencies.append((clock() - parse_ts(verified.created)).total_seconds())
    if latencies:  # DESIGN §5: peer segment published → merged here, for the metrics history
        _remember(node, stamp(clock()), {"merge_latency_s": max(latencies)})
    if report.merged:
        logger.info("merged %d piece(s), %d step(s)", len(report.merged), sum(r for *_, r in report.merged))
        refresh_fingerprint(node, clock=clock)
    return report


def _note_refusal(node: Node, manifest: Path, exc: SegmentError, clock) -> None:
    """Once per file and reason in the event log; the log line says it every time."""
    logger.warning("refused %s: %s", manifest, exc)
    db = open_state(node.layout.state_db)
    try:
        message = f"{manifest}: {exc.code}: {exc}"
        if not db.execute("SELECT 1 FROM events WHERE kind = 'refused' AND message = ?", [message]).fetchone():
            db["events"].insert({"ts": stamp(clock()), "kind": "refused",
                                 "message": message})
    finally:
        db.close()


def _announce(node: Node, owner: str) -> None:
    try:
        node.client.scan(recovery_folder_id(owner))
    except SyncthingError as exc:
        logger.warning("published locally; Syncthing will pick it up later (%s)", str(exc).split(";")[0])


# -- metrics and fingerprints ------------------------------------------------------------

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
    db = open_state(node.layout.state_db)
    try:
        valid = [(r[0], r[1]) for r in db.execute("SELECT path, hash FROM frames WHERE status = 'valid'")]
        invalid = db.execute("SELECT count(*) FROM frames WHERE status = 'invalid'").fetchone()[0]
        conflicts = db.execute("SELECT count(DISTINCT path) FROM conflicts WHERE kind = 'conflict' "
                               "AND status = 'open'").fetchone()[0]
    finally:
        db.close()
    shared = [(path, digest) for path, digest in valid if not path.startswith(local)] if local else valid
    return FrameCounts(len(valid) + invalid, conflicts, invalid, frames_root(shared))


def node_metrics(node: Node, counts: FrameCounts | None = None) -> Metrics:
    """The seed metrics here; frames whose state differs across nodes are estimated from the
    fingerprints: when our frames root is not the majority's, the count gap (at least 1)."""
    counts = counts or frame_counts(node)
    views = read_fingerprints(node)
    agreement = compare(views)
    disagreeing = 0
    majority = agreement["majority_root"]
    if majority is not None and counts.root != majority:
        majority_counts = [v.fingerprint.frames_count for v in views
                           if v.ok and v.fingerprint.frames_root == majority]
        disagreeing = max(1, abs(counts.total - (majority_counts[0] if majority_counts else 0)))
    conn = connect(node.layout.trace_db)
    try:
        return compute_metrics(conn, frames_total=counts.total, frames_in_conflict=counts.in_conflict,
                               frames_invalid=counts.invalid, frames_disagreeing=min(disagreeing, counts.total))
    finally:
        conn.close()


def refresh_fingerprint(node: Node, *, clock: Callable[[], datetime] = utc_now) -> None:
    counts = frame_counts(node)
    metrics = node_metrics(node, counts)
    conn = connect(node.layout.trace_db)
    try:
        facts = trace_facts(conn, node.name)
    finally:
        conn.close()
    fp = make_fingerprint(
        node=node.name, device_id=node.config.device_id, version=importlib.metadata.version("twinsync"),
        frames_root=counts.root, frames_count=counts.total, trace_steps=facts.trace_steps,
        trace_sessions=facts.trace_sessions, trace_head=facts.trace_head,
        last_publish=facts.last_publish, last_merge=facts.last_merge,
        pending_conflicts=counts.in_conflict + counts.invalid, pending_forks=len(forks(node)),
        metrics=metrics, key=node.signing_key(), clock=clock)
    write_fingerprint(node.layout.recovery(node.name) / FINGERPRINT_NAME, fp)
    _remember(node, fp.created, fp.metrics)


def _remember(node: Node, ts: str, values: dict[str, float | None]) -> None:
    """Metrics history in state.db, for the TUI's sparklines."""
    db = open_state(node.layout.state_db)
    try:
        db["metrics"].insert_all([{"ts": ts, "name": k, "value": v} for k, v in values.items() if v is not None])
    finally:
        db.close()


def metrics_history(node: Node, limit: int = 200) -> dict[str, list[tuple[str, float]]]:
    """Each metric's last `limit` values, oldest first."""
    db = open_state(node.layout.state_db)
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


@dataclass(frozen=True)
class NodeRow:
    """One line of `twinsync nodes` and of the TUI's node table."""

    name: str
    device_id: str | None
    online: bool | None
    fingerprint: FingerprintView
    frames_agree: bool | None


def nodes(node: Node) -> list[NodeRow]:
    views = read_fingerprints(node)
    agreement = compare(views)["by_node"]
    devices = {node.name: node.config.device_id, **{n: p.device_id for n, p in node.peers().items()}}
    try:
        connections = node.client.connections()
    except SyncthingError:
        connections = None
    rows = []
    for view in views:
        device = devices.get(view.node)
        online = True if view.node == node.name else (
            None if connections is None or device is None else bool(connections.get(device, {}).get("connected")))
        rows.append(NodeRow(view.node, device, online, view, agreement.get(view.node)))
    return rows


# -- snapshots and restore ---------------------------------------------------------------

def snapshots(node: Node, of: str | None = None) -> list[SnapshotInfo]:
    return list_snapshots(node.layout.recovery_root, node=of)


def verify(node: Node, info: SnapshotInfo) -> VerifiedSnapshot:
    return verify_snapshot(info.manifest_path, node.trusted_keys())


def find_snapshot(node: Node, name: str | None, of: str | None) -> SnapshotInfo:
    """By file name (with or without .json/.db), or the newest of node `of` (default: us)."""
    owner = of or node.name
    found = snapshots(node, owner if name is None else of)
    if name is not None:
        stem = Path(name).name.removesuffix(".json").removesuffix(".db")
        found = [s for s in found if s.manifest_path.stem == stem]
    if not found:
        what = f"snapshot {name}" if name else f"snapshot of {owner}"
        raise TraceError(f"There is no {what} under {node.layout.recovery_root}; list them with "
                         "`twinsync snapshots`.")
    return found[0]


@dataclass(frozen=True)
class RestoreReport:
    snapshot: str
    node: str
    rows: int
    backup: Path | None
    merged_after: MergeReport


def restore(node: Node, info: SnapshotInfo, *, as_new_machine: bool = False,
            progress: Callable[[int, int], None] | None = None) -> RestoreReport:
    """Verify, keep the old trace.db aside, swap the snapshot in, then merge every newer
    segment (ours and the peers') so nothing published since the snapshot is lost."""
    verified = verify(node, info)
    if verified.node != node.name and not as_new_machine:
        raise TraceError(f"Snapshot {info.manifest_path.name} is {verified.node}'s, not {node.name}'s; "
                         "pass --as-new-machine to take over a dead node's published trace here.")
    backup = restore_snapshot(node.layout.trace_db, verified, progress=progress, node=node.name)
    after = merge_now(node)
    return RestoreReport(info.manifest_path.name, verified.node, verified.rows, backup, after)
