"""Flows 3, 4 and 6 of DESIGN §3 as services: publish (segment, snapshot, retention,
fingerprint), merge (verify, then union, in each node's sequence order), node fingerprints,
snapshots and restore. The daemon runs publish and merge on a schedule; the CLI and the
TUI call the same functions."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from folders.decisions import ForkView
from folders.errors import TraceError
from folders.fingerprint import (FINGERPRINT_NAME, FactsBook, Fingerprint, FingerprintView, compare, make_fingerprint,
                                 read_fingerprint, update_facts, write_fingerprint)
from folders.ids import by_prefix
from folders.manifest import SegmentError
from folders.mergeplan import Bridge, Merge, Refuse, Wait, plan, survey
from folders.metrics import judge
from folders.restore import restore_snapshot, shadow_sessions
from folders.segments import SEGMENTS_DIR, merge_segment, publish, verify_segment
from folders.retention import due_for_snapshot, prune, remove_leftovers
from folders.snapshots import (SNAPSHOTS_DIR, SnapshotInfo, VerifiedSnapshot, list_snapshots,
                               make_snapshot, merge_snapshot, verify_snapshot)
from folders.trace import connect, parse_ts, utc_now
from orchestrator import __version__, traces
from orchestrator.dbversion import Memo
from orchestrator.fingerprint_inputs import FingerprintInputs
from orchestrator.heartbeat import DaemonHealth, link_port, load_heartbeat, read_health
from orchestrator.lock import RESTORE, daemon_lock, publish_lock, refuse_while_daemon_runs, running_daemon
from orchestrator.meaning import node_profile
from orchestrator.node import Node
from orchestrator.metrics import FrameCounts, frame_counts, goal_tallies, node_metrics, read_fingerprints, remember
from orchestrator.state import open_state, stamp
from syncthing.errors import SyncthingError
from syncthing.folderspec import recovery_folder_id

logger = logging.getLogger(__name__)

@dataclass
class PublishReport:
    segment: str | None = None
    steps: int = 0
    snapshot: str | None = None
    pruned: int = 0


def publish_now(node: Node, *, clock: Callable[[], datetime] = utc_now, refresh: bool = True) -> PublishReport:
    """Coherent finished sessions → a new signed segment; a snapshot when one is due; old
    ones pruned; the fingerprint refreshed (unless `refresh` is False: the daemon refreshes
    it on its own, see `announce_fingerprint`); Syncthing asked to scan at once."""
    with publish_lock(node.layout.home):
        return _publish(node, clock, refresh)


def announce_fingerprint(node: Node, *, clock: Callable[[], datetime] = utc_now,
                         inputs: FingerprintInputs | None = None, trace: Memo | None = None,
                         forks: Callable[[], list[ForkView]] | None = None) -> bool:
    """Refresh the fingerprint and, when it was rewritten, ask Syncthing to send it now.

    The daemon calls this once for a burst of publishes and merges rather than after each:
    every refresh reads every node's fingerprint and the whole trace's metrics, so with N
    nodes publishing, refreshing per merge costs each node O(N) refreshes a round. With the
    daemon's `inputs`, nothing is read when none of them changed (an idle node); with its
    `trace` memo, the trace is not scanned again while it is unchanged."""
    done = inputs.due() if inputs is not None else (lambda rewrote: None)
    if done is None:
        return False
    rewritten = refresh_fingerprint(
        node, clock=clock, trace=trace, forks=forks, through=inputs.writer() if inputs is not None else None,
        counts=(lambda: inputs.frame_counts(lambda: frame_counts(node))) if inputs is not None else None)
    if rewritten:
        _announce(node, node.name)
    done(rewritten)
    return rewritten


def _publish(node: Node, clock: Callable[[], datetime], refresh: bool) -> PublishReport:
    """Under the publish lock, which serialises the daemon's publish and `trace publish`."""
    settings = node.config.traces
    out = node.layout.recovery(node.name)
    key = node.signing_key()
    report = PublishReport()
    for path in remove_leftovers(out, time.time()):
        logger.warning("removed %s, left by an interrupted publish", path.name)
    segment = publish(node.layout.trace_db, out / SEGMENTS_DIR, node.name, key, clock=clock)
    if segment is not None:
        report.segment, report.steps = segment.manifest_path.name, segment.rows
        logger.info("published %s (%d steps)", segment.manifest_path.name, segment.rows)
    if due_for_snapshot(out, settings.snapshot_every_segments, settings.snapshot_every_minutes, clock()):
        snapshot = make_snapshot(node.layout.trace_db, out / SNAPSHOTS_DIR, node.name, key, clock=clock)
        report.snapshot = snapshot.manifest_path.name
        report.pruned = len(prune(out, settings.keep_snapshots))
        logger.info("snapshot %s (%d steps), pruned %d file(s)", snapshot.path.name, snapshot.rows, report.pruned)
    if (refresh and refresh_fingerprint(node, clock=clock)) or report.segment or report.snapshot:
        _announce(node, node.name)
    return report


@dataclass
class MergeReport:
    """What one merge did, and every file of a peer's folder it left: nothing is silent."""

    merged: list[tuple[str, int, int]] = field(default_factory=list)  # node, seq, rows
    bridged: list[tuple[str, int, int, str]] = field(default_factory=list)  # node, seq, rows, file
    waiting: list[tuple[str, str]] = field(default_factory=list)  # file, reason
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # file, code, reason
    gaps: list[tuple[str, int, str]] = field(default_factory=list)  # node, next seq, reason


def merge_now(node: Node, *, clock: Callable[[], datetime] = utc_now,
              progress: Callable[[int, int], None] | None = None, refresh: bool = True) -> MergeReport:
    """Execute the merge plan (folders/mergeplan): verify, then merge each segment or
    bridge with each snapshot, in the plan's order. A piece that fails verification is
    handed back to the plan, which goes around it (another snapshot may bridge, else its
    node waits), so a later segment never jumps a gap. Every file left waiting or refused
    is in the report and logged once per file and reason."""
    trusted = node.trusted_keys()
    trace_db = node.layout.trace_db
    report = MergeReport()
    latencies: list[float] = []
    failed: dict[Path, tuple[str, str]] = {}
    done = 0
    while True:
        actions = plan(survey(node.layout.recovery_root, trace_db, node.name), failed)
        work = [a for acts in actions.values() for a in acts if isinstance(a, (Merge, Bridge))]
        total, again = done + len(work), False
        for node_actions in actions.values():
            for action in node_actions:
                if not isinstance(action, (Merge, Bridge)):
                    continue
                if progress is not None:
                    progress(done, total)
                piece = action.segment if isinstance(action, Merge) else action.snapshot
                verify, merge = ((verify_segment, merge_segment) if isinstance(action, Merge)
                                 else (verify_snapshot, merge_snapshot))
                try:
                    # Each step's hash is recomputed once, by the merge, as it copies it.
                    rows = merge(trace_db, verify(piece.manifest_path, trusted, hash_steps=False), clock=clock)
                except SegmentError as exc:
                    failed[piece.manifest_path] = (exc.code, str(exc))
                    again = True
                    break
                done += 1
                if isinstance(action, Merge):
                    report.merged.append((piece.node, piece.seq, rows))
                else:
                    report.bridged.append((piece.node, piece.seq, rows, str(piece.manifest_path)))
                latencies.append((clock() - parse_ts(piece.created)).total_seconds())
        if not again:
            break
    _account(node, actions, report, clock)
    if latencies:  # DESIGN §5: peer segment published → merged here, for the metrics history
        remember(node, stamp(clock()), {"merge_latency_s": max(latencies)})
    if report.merged or report.bridged:
        logger.info("merged %d segment(s) and bridged %d snapshot(s), %d step(s)",
                    len(report.merged), len(report.bridged),
                    sum(r for *_, r in report.merged) + sum(b[2] for b in report.bridged))
        if refresh:
            announce_fingerprint(node, clock=clock)
    return report


def _account(node: Node, actions: dict[str, list], report: MergeReport, clock) -> None:
    """The plan's waits and refusals into the report, and into the daemon log and state.db's
    event log once per file and reason (the event's time says since when)."""
    for node_actions in actions.values():
        for action in node_actions:
            if isinstance(action, Refuse):
                report.refused.append((str(action.path), action.code, action.reason))
            elif isinstance(action, Wait):
                report.waiting.extend((str(path), action.reason) for path in action.files)
                if action.seq is not None:
                    report.gaps.append((action.node, action.seq, action.reason))
    notes = [("refused", f"{path}: {code}: {reason}") for path, code, reason in report.refused]
    notes += [("waiting", f"{path}: {reason}") for path, reason in report.waiting]
    if not notes:
        return
    db = open_state(node.layout.state_db)
    try:
        seen = {(kind, message) for kind, message in db.execute(
            "SELECT kind, message FROM events WHERE kind IN ('refused', 'waiting')")}
        new = [(kind, message) for kind, message in notes if (kind, message) not in seen]
        for kind, message in new:
            logger.warning("%s %s", kind, message)
        if new:
            db["events"].insert_all([{"ts": stamp(clock()), "kind": kind, "message": message}
                                     for kind, message in new])
    finally:
        db.close()


@dataclass(frozen=True)
class PeerPieces:
    """One node's pieces not merged here: the gap it waits on (since when, and whether that
    is longer than [traces] gap_warning_s), the files waiting and the files refused."""

    gap: tuple[int, str] | None = None  # next seq, reason
    waiting_since: str | None = None
    overdue: bool = False
    waiting: tuple[tuple[str, str], ...] = ()  # file, reason
    refused: tuple[tuple[str, str, str], ...] = ()  # file, code, reason


def pending(node: Node, *, now: datetime | None = None) -> dict[str, PeerPieces]:
    """Per node, what the merge plan would leave waiting or refused, without verifying or
    merging anything (cheap: manifests only). Since when a gap waits comes from the event
    log the merge writes, so it counts from the first merge that met it."""
    now = now or utc_now()
    actions = plan(survey(node.layout.recovery_root, node.layout.trace_db, node.name))
    db = open_state(node.layout.state_db)
    try:
        first_seen = dict(db.execute("SELECT message, min(ts) FROM events WHERE kind = 'waiting' "
                                     "GROUP BY message"))
    finally:
        db.close()
    limit = timedelta(seconds=node.config.traces.gap_warning_s)
    result = {}
    for name, node_actions in actions.items():
        waits = [a for a in node_actions if isinstance(a, Wait)]
        gap = next(((a.seq, a.reason) for a in waits if a.seq is not None), None)
        since = min((first_seen[f"{path}: {a.reason}"] for a in waits if a.seq is not None
                     for path in a.files if f"{path}: {a.reason}" in first_seen), default=None)
        overdue = since is not None and now - _parse_stamp(since) >= limit
        result[name] = PeerPieces(
            gap, since, overdue, tuple((str(p), a.reason) for a in waits for p in a.files),
            tuple((str(a.path), a.code, a.reason) for a in node_actions if isinstance(a, Refuse)))
    return result


def size_text(size: int | None) -> str:
    """A file's size as `snapshots` and the TUI show it: kB below a megabyte, else MB;
    "arriving" while Syncthing is still bringing it."""
    if size is None:
        return "arriving"
    if size < 999_950:  # what would round to "1000.0 kB" reads as 1.0 MB
        return f"{size / 1e3:.1f} kB"
    return f"{size / 1e6:.1f} MB"


def fingerprint_verdict(fp: Fingerprint, name: str) -> bool | None:
    """A node's metric judged from its fingerprint, on the counts the fingerprint carries (its
    frames for the conflict rate, its published sessions for the others): `nodes` and the
    TUI's Nodes tab say "too few" for None, not a red 75 % on a fresh node's first frames."""
    samples = {"conflict_rate": fp.frames_count, "access_p95_ms": 1}.get(name, fp.trace_sessions)
    return judge(name, fp.metrics.get(name), samples)


def pieces_summary(pieces: PeerPieces) -> str:
    """One short cell for a node's row: "ok"; "wait #N" for the gap it waits on ("late #N"
    past [traces] gap_warning_s), or how many files are arriving; how many are refused."""
    parts = []
    if pieces.gap is not None:
        parts.append(f"{'late' if pieces.overdue else 'wait'} #{pieces.gap[0]}")
    elif pieces.waiting:
        parts.append(f"{len(pieces.waiting)} arriving")
    if pieces.refused:
        parts.append(f"{len(pieces.refused)} refused")
    return ", ".join(parts) or "ok"


def _parse_stamp(text: str) -> datetime:
    """A state.db time (`stamp`) back into a datetime."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def _announce(node: Node, owner: str) -> None:
    try:
        node.client.scan(recovery_folder_id(owner))
    except SyncthingError as exc:
        logger.warning("published locally; Syncthing will pick it up later (%s)", str(exc).split(";")[0])


# -- fingerprints --------------------------------------------------------------------------

#: Metrics that differ on every measurement (a query's wall time): a new value alone is not a
#: change worth a new signature; it travels with the next real change or staleness refresh.
MEASURED_EACH_TIME = frozenset({"access_p95_ms"})


def refresh_fingerprint(node: Node, *, clock: Callable[[], datetime] = utc_now,
                        trace: Memo | None = None, through: sqlite3.Connection | None = None,
                        forks: Callable[[], list[ForkView]] | None = None,
                        counts: Callable[[], FrameCounts] | None = None) -> bool:
    """Re-sign and rewrite fingerprint.json only when a value in it changed, or when the one
    on disk is half-way to `fingerprint_stale_s` (so peers never see it stale): an idle node
    then gives Syncthing nothing to scan or send. True when it was written. `trace` keeps
    what is computed from every step (goal tallies, facts: seconds on a 1M-step trace)
    and brings it up to date after a change, reading only the sessions that changed;
    `through` is the connection to state.db that keeps
    what the refresh writes there (the metrics history, the profile cache; see `remember`);
    `forks` reads the trace's forks (the daemon's `ForkWatch`, shared with its alerts);
    `counts` the frame counts (the daemon's, kept while state.db is unchanged)."""
    from orchestrator.modules import running_modules  # Git: for the publisher, not for `status`

    def read_facts(book: FactsBook | None = None) -> FactsBook:
        conn = connect(node.layout.trace_db)
        try:
            return update_facts(conn, node.name, book)
        finally:
            conn.close()

    key = node.signing_key()
    counts = counts() if counts is not None else frame_counts(node)
    tallies = (trace.carry("tallies", lambda book: goal_tallies(node, book)) if trace is not None
               else goal_tallies(node))
    metrics = node_metrics(node, counts, tallies=tallies.tallies)
    facts = (trace.carry("facts", read_facts) if trace is not None else read_facts()).facts
    fp = make_fingerprint(
        node=node.name, device_id=node.config.device_id, version=__version__,
        frames_root=counts.root, frames_count=counts.total, trace_steps=facts.trace_steps,
        trace_sessions=facts.trace_sessions, trace_head=facts.trace_head,
        last_publish=facts.last_publish, last_merge=facts.last_merge,
        pending_conflicts=counts.in_conflict + counts.invalid,
        pending_forks=len(forks() if forks is not None else traces.forks(node)),
        metrics=metrics, key=key, profile=node_profile(node, through=through), clock=clock,
        modules=running_modules(node), link=link_port(node.layout.home))
    path = node.layout.recovery(node.name) / FINGERPRINT_NAME
    if _still_current(node, path, fp, key.public_key()):
        return False
    write_fingerprint(path, fp)
    remember(node, fp.created, fp.metrics, through=through)
    return True


def _still_current(node: Node, path: Path, fresh: Fingerprint, public: Ed25519PublicKey) -> bool:
    """The fingerprint on disk is ours, says what `fresh` says, and is young enough."""
    refresh_after = timedelta(seconds=node.config.traces.fingerprint_stale_s / 2)
    view = read_fingerprint(path, {node.name: public}, now=fresh.created_at(), stale_after=refresh_after)
    if not view.ok or view.stale:
        return False
    def essence(fp: Fingerprint) -> dict:
        return {**fp.unsigned_dict(), "created": None,
                "metrics": {k: v for k, v in fp.metrics.items() if k not in MEASURED_EACH_TIME}}

    return essence(view.fingerprint) == essence(fresh)


@dataclass(frozen=True)
class NodeRow:
    """One line of `twinsync nodes` and of the TUI's node table."""

    name: str
    device_id: str | None
    online: bool | None
    fingerprint: FingerprintView
    frames_agree: bool | None
    pieces: PeerPieces = PeerPieces()
    daemon: DaemonHealth | None = None  # this node's row only: a peer's shows as a stale fingerprint
    #: A peer's link as this node's daemon last pinged it: {"rtt_ms", "problem", "at"}; None
    #: for this node's own row, and while no daemon runs here to measure.
    link: dict[str, Any] | None = None


def nodes(node: Node) -> list[NodeRow]:
    views = read_fingerprints(node)
    agreement = compare(views)["by_node"]
    devices = {node.name: node.config.device_id, **{n: p.device_id for n, p in node.peers().items()}}
    try:
        connections = node.client.connections()
    except SyncthingError:
        connections = None
    waiting = pending(node)
    beat = load_heartbeat(node.layout.home) if running_daemon(node.layout.home) is not None else None
    links = beat.links if beat is not None else {}
    rows = []
    for view in views:
        device = devices.get(view.node)
        online = True if view.node == node.name else (
            None if connections is None or device is None else bool(connections.get(device, {}).get("connected")))
        rows.append(NodeRow(view.node, device, online, view, agreement.get(view.node),
                            waiting.get(view.node, PeerPieces()),
                            read_health(node.layout.home) if view.node == node.name else None,
                            links.get(view.node)))
    return rows


# -- snapshots and restore ---------------------------------------------------------------

def snapshots(node: Node, of: str | None = None) -> list[SnapshotInfo]:
    return list_snapshots(node.layout.recovery_root, node=of)


def verify(node: Node, info: SnapshotInfo) -> VerifiedSnapshot:
    return verify_snapshot(info.manifest_path, node.trusted_keys())


def find_snapshot(node: Node, name: str | None, of: str | None) -> SnapshotInfo:
    """By file name (with or without .json/.db) or a unique beginning of it, or the newest
    of node `of` (default: us)."""
    owner = of or node.name
    found = snapshots(node, owner if name is None else of)
    if name is not None and found:
        stem = by_prefix(Path(name).name.removesuffix(".json").removesuffix(".db"),
                         [s.manifest_path.stem for s in found], what="snapshot", listing="twinsync snapshots")
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
    shadows: int = 0  # this node's unpublished sessions brought back on top
    shadows_left: str | None = None  # where they stay when they could not be brought back


def restore(node: Node, info: SnapshotInfo, *, as_new_machine: bool = False,
            progress: Callable[[int, int], None] | None = None) -> RestoreReport:
    """Verify, keep the old trace.db aside, swap the snapshot in with this node's shadow
    sessions on top, then run the merge plan so nothing published since is lost. The
    snapshot is verified as it is copied in (`restore_snapshot`), read once."""
    refuse_while_daemon_runs(node.layout.home, "restore")
    if info.node != node.name and not as_new_machine:
        raise TraceError(f"Snapshot {info.manifest_path.name} is {info.node}'s, not {node.name}'s; "
                         "pass --as-new-machine to take over a dead node's published trace here.")
    with daemon_lock(node.layout.home, holder=RESTORE):  # no daemon starts and publishes mid-restore
        return _restore(node, info, as_new_machine, progress)


def _restore(node: Node, info: SnapshotInfo, as_new_machine: bool,
             progress: Callable[[int, int], None] | None) -> RestoreReport:
    from orchestrator.forked import cores  # multiprocessing: 60 ms of imports other commands skip

    try:
        before = shadow_sessions(node.layout.trace_db, node.name) if node.layout.trace_db.exists() else 0
    except TraceError:
        before = None  # unreadable: whatever it holds stays in the backup
    restored = restore_snapshot(node.layout.trace_db, info.manifest_path, node.trusted_keys(),
                                progress=progress, node=node.name, new_machine=as_new_machine,
                                workers=cores())
    backup = restored.backup
    shadows = shadow_sessions(node.layout.trace_db, node.name)
    left = None
    if before is None or shadows < before:
        left = (f"{backup}: the old trace.db could not be read, so any unpublished sessions stay "
                "there; open it with sqlite3 to copy them out")
    after = merge_now(node)
    return RestoreReport(info.manifest_path.name, restored.snapshot.node, restored.snapshot.rows, backup,
                         after, shadows, left)


def restore_stage(done: int, total: int) -> str:
    """What a restore is doing, from its progress, in the words the CLI and the TUI both
    show: after the copy come the checks (every step's hash) and the merge of newer
    segments, seconds for a large snapshot, which the byte count cannot show."""
    return "copying the snapshot in" if done < total else "checking every step, then merging newer segments"


def restore_summary(report: RestoreReport) -> str:
    """What a restore did, in the words the CLI and the TUI both show."""
    text = (f"Restored {report.rows} steps from {report.snapshot} ({report.node}); merged "
            f"{len(report.merged_after.merged) + len(report.merged_after.bridged)} newer piece(s).")
    if report.shadows:
        text += f" {report.shadows} unpublished session(s) of this node are back on top."
    if report.shadows_left:
        text += f" Unpublished sessions left behind: {report.shadows_left}."
    if report.backup:
        text += f" The old trace is in {report.backup}."
    return text
