"""The service calls the TUI makes, in one place, so tests can pass a fake with fixed values.

`NodeService` is a thin adapter over orchestrator's service layer: every method opens the
node home, makes the same call the CLI makes and returns its value objects unchanged. It
holds no logic and no Textual: the app calls it from thread workers only, never from the
event loop, because every call may touch Git, SQLite or Syncthing's REST API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from folders.decisions import ForkView
from folders.frame import Frame
from folders.gitstore import Revision
from folders.metrics import Metrics
from folders.snapshots import SnapshotInfo, VerifiedSnapshot
from folders.trace import Step
from orchestrator import ask, controls, frames, modules, recovery, traces
from orchestrator.ask import Answer
from orchestrator.link import LinkError, PeerLink
from orchestrator.conflicts import ConflictItem
from orchestrator.demo import Timeline, TimelineView
from orchestrator.frames import FrameEntry
from orchestrator.modules import ModuleSummary, ModuleVersion
from orchestrator.node import INTERACTIVE_TIMEOUT, Node
from orchestrator.recovery import NodeRow, RestoreReport
from orchestrator.status import NodeStatus, node_status
from orchestrator.traffic import PeerTraffic, Reading, peer_traffic
from orchestrator.metrics import metrics_history, node_metrics

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class QueueData:
    """What the Queue tab shows: open conflict-queue items, trace forks (with the steps of
    each forked session, to show the branches and when they were made) and modules that
    wait for this node's approval or are refused; with `history`, decided items and forks
    with a decision instead, each saying who decided and where."""

    conflicts: list[ConflictItem]
    forks: list[ForkView]
    steps: dict[str, list[Step]] = field(default_factory=dict)  # session -> its steps
    modules: list[ModuleSummary] = field(default_factory=list)  # awaiting approval or refused
    history: bool = False


@dataclass(frozen=True)
class MetricsData:
    """This node's seed metrics now, and each metric's history for the sparklines."""

    current: Metrics
    history: dict[str, list[tuple[str, float]]]


class Service(Protocol):
    """Everything the TUI asks of a node; `NodeService` is the real one."""

    def status(self) -> NodeStatus: ...
    def nodes(self) -> list[NodeRow]: ...
    def queue(self, *, history: bool = False) -> QueueData: ...
    def conflict_diff(self, item: ConflictItem) -> str: ...
    def decide_conflict(self, item_id: int, *, approve: bool) -> list[ConflictItem]: ...
    def decide_fork(self, fork_id: str, branch: str, verdict: str) -> ForkView: ...
    def decide_module(self, name: str, *, approve: bool) -> ModuleVersion: ...

    def snapshots(self) -> list[SnapshotInfo]: ...
    def verify(self, info: SnapshotInfo) -> VerifiedSnapshot: ...
    def restore(self, info: SnapshotInfo, *, as_new_machine: bool = False,
                progress: Progress | None = None) -> RestoreReport: ...
    def frames(self) -> list[FrameEntry]: ...
    def frame_log(self, frame_id: str) -> list[Revision]: ...
    def revision_diff(self, frame_id: str, rev: str) -> str: ...
    def restore_frame(self, frame_id: str, rev: str) -> Frame: ...
    def metrics(self) -> MetricsData: ...
    def traffic(self) -> list[PeerTraffic]: ...
    def set_paused(self, peer: str, paused: bool) -> str: ...
    def rescan(self) -> list[str]: ...
    def unpair(self, peer: str, *, keep_recovery: bool) -> controls.UnpairReport: ...
    def ask(self, goal: str) -> Answer: ...
    def watch(self, on_event: Callable[[dict], None], done: Callable[[], bool]) -> None: ...
    def demo(self) -> TimelineView | None: ...
    def follow_demo(self, on_change: Callable[[], None]) -> Callable[[], None]: ...


class NodeService:
    """The real service: each call opens the node home, as each CLI command does."""

    def __init__(self, home: Path, *, timeout: float = INTERACTIVE_TIMEOUT, demo: Timeline | None = None) -> None:
        self.home = Path(home)
        self.timeout = timeout
        self._demo = demo  # `twinsync demo` runs in this process: its timeline
        self._reading: Reading | None = None  # the last byte counters, for the next rates
        self.watching = False  # the daemon's events arrive over its link (the header says "live")

    @contextmanager
    def _node(self) -> Iterator[Node]:
        with Node.open(self.home, timeout=self.timeout) as node:
            yield node

    def status(self) -> NodeStatus:
        with self._node() as node:
            return node_status(node, broker=False)

    def nodes(self) -> list[NodeRow]:
        with self._node() as node:
            return recovery.nodes(node)

    def queue(self, *, history: bool = False) -> QueueData:
        """What `twinsync conflicts` (or `conflicts --decided`) and `twinsync forks` list."""
        with self._node() as node:
            conflicts = frames.list_conflicts(node, shows="decided" if history else "open")
            forks = [f for f in traces.forks(node) if f.decision or not history]
            steps = {f.session: traces.show(node, f.session).steps for f in forks}
            pending = [] if history else [s for s in modules.list_modules(node) if s.awaiting or s.refused]
        return QueueData(conflicts, forks, steps, pending, history)

    def conflict_diff(self, item: ConflictItem) -> str:
        with self._node() as node:
            return frames.conflict_diff(node, item)

    def decide_conflict(self, item_id: int, *, approve: bool) -> list[ConflictItem]:
        """What `twinsync approve ID` / `twinsync reject ID` do."""
        with self._node() as node:
            return frames.decide(node, frames.select_conflicts(node, [item_id]), approve=approve)

    def decide_fork(self, fork_id: str, branch: str, verdict: str) -> ForkView:
        """What `twinsync fork approve|reject ID BRANCH` does."""
        with self._node() as node:
            return traces.decide_fork(node, fork_id, branch, verdict)

    def decide_module(self, name: str, *, approve: bool) -> ModuleVersion:
        """What `twinsync module approve|reject NAME` does (the newest awaiting version)."""
        with self._node() as node:
            return (modules.approve if approve else modules.reject)(node, name)

    def snapshots(self) -> list[SnapshotInfo]:
        with self._node() as node:
            return recovery.snapshots(node)

    def verify(self, info: SnapshotInfo) -> VerifiedSnapshot:
        with self._node() as node:
            return recovery.verify(node, info)

    def restore(self, info: SnapshotInfo, *, as_new_machine: bool = False,
                progress: Progress | None = None) -> RestoreReport:
        with self._node() as node:
            return recovery.restore(node, info, as_new_machine=as_new_machine, progress=progress)

    def frames(self) -> list[FrameEntry]:
        with self._node() as node:
            return frames.list_frames(node)

    def frame_log(self, frame_id: str) -> list[Revision]:
        with self._node() as node:
            return frames.frame_log(node, frame_id)

    def revision_diff(self, frame_id: str, rev: str) -> str:
        with self._node() as node:
            return frames.revision_diff(node, frame_id, rev)

    def restore_frame(self, frame_id: str, rev: str) -> Frame:
        with self._node() as node:
            return frames.restore_frame(node, frame_id, rev)

    def metrics(self) -> MetricsData:
        with self._node() as node:
            return MetricsData(node_metrics(node), metrics_history(node))

    def traffic(self) -> list[PeerTraffic]:
        """Rates since the previous call (none on the first), as `nodes` shows them."""
        with self._node() as node:
            self._reading, rows = peer_traffic(node, self._reading)
        return rows

    def set_paused(self, peer: str, paused: bool) -> str:
        """What `twinsync pause PEER` / `resume PEER` do."""
        with self._node() as node:
            return controls.set_paused(node, peer=peer, paused=paused)

    def rescan(self) -> list[str]:
        with self._node() as node:
            return controls.rescan(node)

    def unpair(self, peer: str, *, keep_recovery: bool) -> controls.UnpairReport:
        """What `twinsync unpair PEER --keep-recovery|--remove-recovery` does."""
        with self._node() as node:
            return controls.unpair(node, peer, keep_recovery=keep_recovery)

    def ask(self, goal: str) -> Answer:
        """What `twinsync ask GOAL` answers."""
        with self._node() as node:
            return ask.ask_network(node, goal)

    def watch(self, on_event: Callable[[dict], None], done: Callable[[], bool]) -> None:
        """This node's daemon's events over its link, each to `on_event`, until `done()`;
        returns at once when no daemon serves a link here, and when the daemon stops."""
        with self._node() as node:
            own = ask.own_link(node)
            if own is None:
                return
            key = node.signing_key()
            try:
                with PeerLink(node.name, key, node.name, key.public_key(), own, 2.0) as link:
                    link.watch(on_event, done, on_watching=lambda: setattr(self, "watching", True))
            except LinkError:
                return  # the daemon stopped or restarted: the caller tries again later
            finally:
                self.watching = False

    def demo(self) -> TimelineView | None:
        """The timeline of the demo this TUI watches, None outside a demo. In memory, no I/O:
        the only call safe on the event loop, and the app checks it before it shows a result."""
        return self._demo.view() if self._demo is not None else None

    def follow_demo(self, on_change: Callable[[], None]) -> Callable[[], None]:
        """`on_change()` (from the demo's thread) after each change of the timeline; returns
        the function that stops it."""
        if self._demo is None:
            return lambda: None
        return self._demo.follow(on_change)
