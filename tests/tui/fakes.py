"""A service with fixed values, for snapshot tests: the same value objects the real
service returns, built by hand, so every screenshot is the same on every run."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from folders.decisions import Decision, ForkView
from folders.fingerprint import Fingerprint, FingerprintProblem, FingerprintView
from folders.frame import Frame
from folders.gitstore import Revision
from folders.metrics import Metrics
from folders.snapshots import SnapshotInfo, VerifiedSnapshot
from folders.trace import Step
from orchestrator.ask import NONE, PEER, Answer, Attempt
from orchestrator.conflicts import ConflictItem
from orchestrator.frames import FrameEntry
from orchestrator.pairing import PeerStatus
from orchestrator.recovery import MergeReport, NodeRow, PeerPieces, RestoreReport
from orchestrator.controls import UnpairReport
from orchestrator.status import FolderStatus, NodeStatus
from orchestrator.traffic import PeerTraffic
from syncthing.errors import SyncthingError
from tui.service import MetricsData, QueueData, Timeline, TimelineView

HOME = Path("/home/me/.local/share/twinsync")
DEVICES = {"laptop": "X7UITSF-DTGOBX5-RANBWKD-EGXYUBU-JN64BL7-BYPPIDW-5EMLQWB-V3RMQAF",
           "desktop": "U2CYW6V-KQ4TZ3N-7VQ2XQH-MZ3BQHM-4WBQZ5L-RQK4JXN-ZL7YQ2C-AT3XK7Q",
           "server": "MH4Q7TL-3XWQZ2R-QKZ5N7B-YV3TQXM-C4QZ7LK-2QXMV4N-Q7ZLK3M-BW2QX5T"}
ROOT_A = "sha256:" + "a1" * 32
ROOT_B = "sha256:" + "b2" * 32
_SERVER_SEGMENTS = HOME / "trace/recovery/server/segments"
#: server's segment 5 never came: 6 waits behind the gap for longer than gap_warning_s
SERVER_PIECES = PeerPieces(
    gap=(5, "segment #5 of server has not arrived, and no snapshot of server here covers it"),
    waiting_since="2026-11-25T07:40:00Z", overdue=True,
    waiting=((str(_SERVER_SEGMENTS / "seg-00000041-00000050.json"),
              "segment #5 of server has not arrived, and no snapshot of server here covers it"),),
    refused=((str(_SERVER_SEGMENTS / "seg-00000090-00000091.json"), "bad_manifest",
              f"Segment manifest {_SERVER_SEGMENTS}/seg-00000090-00000091.json is empty; remove it, "
              "or ask its node to publish again."),))


def _h(n: int) -> str:
    return "sha256:" + f"{n:02x}" * 32


def _fingerprint(node: str, created: str, *, root: str = ROOT_A, steps: int = 42,
                 conflicts: int = 0, forks: int = 0, metrics: dict | None = None) -> Fingerprint:
    return Fingerprint(node=node, device_id=DEVICES[node], version="0.1.0", created=created,
                       frames_root=root, frames_count=40, trace_steps=steps, trace_sessions=30,
                       trace_head=_h(len(node)), last_publish=created, last_merge="2026-11-25T07:58:02Z",
                       pending_conflicts=conflicts, pending_forks=forks,
                       metrics=metrics or {"convergence": 0.93, "conflict_rate": 0.0,
                                           "access_p95_ms": 3.2, "routes_per_goal": 3.5},
                       sig="ed25519:fake")


def _view(fp: Fingerprint, *, stale: bool = False) -> FingerprintView:
    return FingerprintView(HOME / "trace/recovery" / fp.node / "fingerprint.json", fp.node, True, None, fp,
                           stale, timedelta(minutes=2))


CONFLICT = ConflictItem(
    id=3, kind="conflict", frame="notes/today", path="notes/today.frame.json",
    copy_path="notes/today.frame.sync-conflict-20261125-080000-U2CYW6V.json", device="U2CYW6V",
    status="open", reason=None, branch="fork/notes/today/U2CYW6V-20261125-080000",
    ours_hash=_h(1), theirs_hash=_h(2), ours_author="laptop", theirs_author="desktop",
    created="2026-11-25T08:00:04Z", decided_by=None, decided_at=None,
    ours_created="2026-11-25T07:58:12Z", theirs_created="2026-11-25T07:59:30Z", device_name="laptop")
#: The same conflict decided on desktop, as a peer sees it once desktop's trace is merged.
DECIDED = replace(CONFLICT, id=1, frame="notes/plan", path="notes/plan.frame.json",
                  copy_path="notes/plan.frame.sync-conflict-20261124-180000-U2CYW6V.json",
                  created="2026-11-24T18:00:03Z", status="approved", decided_by="desktop",
                  decided_at="2026-11-24T18:05:00Z")
INVALID = ConflictItem(
    id=2, kind="invalid", frame=None, path="notes/forged.frame.json", copy_path=None, device=None,
    status="open", reason="bad_schema: notes/forged.frame.json is not a frame: it has no hash.",
    branch=None, ours_hash=None, theirs_hash=None, ours_author=None, theirs_author=None,
    created="2026-11-25T07:40:00Z", decided_by=None, decided_at=None)
DIFF = """--- current version: notes/today.frame.json (by laptop)
+++ set-aside version: notes/today.frame.sync-conflict-20261125-080000-U2CYW6V.json (by desktop)
@@ -1,4 +1,4 @@
 {
-  "text": "gym on Tuesday",
+  "text": "gym on Thursday",
   "where": "downtown"
 }
"""
SESSION = "sess-" + "5e" * 14
STEPS = [
    Step(_h(10), SESSION, "plan the week", None, "laptop", "2026-11-25T06:00:00.000000Z", "observation", "Monday is full"),
    Step(_h(11), SESSION, "plan the week", _h(10), "laptop", "2026-11-25T06:01:00.000000Z", "conclusion", "gym on Thursday"),
    Step(_h(12), SESSION, "plan the week", _h(10), "laptop", "2026-11-25T07:30:00.000000Z", "observation", "the gym is closed"),
    Step(_h(13), SESSION, "plan the week", _h(12), "laptop", "2026-11-25T07:31:00.000000Z", "conclusion", "run outside"),
]
FORK = ForkView(id="1a2b3c4d5e6f", session=SESSION, goal="plan the week", parent=_h(10),
                branches=(_h(11), _h(12)), consensus_branch=_h(11),
                decision=Decision(_h(20), "desktop", "2026-11-25T07:45:00.000000Z", _h(12), "approve"),
                chosen=_h(12))
SNAPSHOTS = [
    SnapshotInfo("laptop", "2026-11-25T07:00:00Z", 7, 42, {"desktop": 3}, _h(30),
                 HOME / "trace/recovery/laptop/snapshots/snap-20261125T070000Z.db",
                 HOME / "trace/recovery/laptop/snapshots/snap-20261125T070000Z.json", 98_304),
    SnapshotInfo("laptop", "2026-11-24T19:00:00Z", 4, 30, {}, _h(31),
                 HOME / "trace/recovery/laptop/snapshots/snap-20261124T190000Z.db",
                 HOME / "trace/recovery/laptop/snapshots/snap-20261124T190000Z.json", 81_920),
    SnapshotInfo("desktop", "2026-11-25T06:30:00Z", 5, 38, {"laptop": 6}, _h(32),
                 HOME / "trace/recovery/desktop/snapshots/snap-20261125T063000Z.db",
                 HOME / "trace/recovery/desktop/snapshots/snap-20261125T063000Z.json", 1_572_864),
    SnapshotInfo("server", "2026-11-25T07:50:00Z", 2, 12, {}, _h(33),
                 HOME / "trace/recovery/server/snapshots/snap-20261125T075000Z.db",
                 HOME / "trace/recovery/server/snapshots/snap-20261125T075000Z.json", None),
]
FRAMES = [
    FrameEntry("notes/forged", "notes/forged.frame.json", False, "bad_schema", None, None, None,
               "notes/forged.frame.json is not a frame: it has no hash."),
    FrameEntry("notes/today", "notes/today.frame.json", True, "ok", "desktop", "2026-11-25T08:00:00Z",
               _h(2), "ok"),
    FrameEntry("plans/week", "plans/week.frame.json", True, "ok", "laptop", "2026-11-24T18:12:30Z",
               _h(3), "ok"),
]
UTC = timezone.utc
REVISIONS = [
    Revision("204cff5bd44d" + "0" * 28, "desktop", datetime(2026, 11, 25, 8, 7, 48, tzinfo=UTC),
             "notes/today: the set-aside version by desktop becomes current (approved on laptop, queue item #3)"),
    Revision("9c1e2a7b3f00" + "0" * 28, "laptop", datetime(2026, 11, 25, 7, 2, 11, tzinfo=UTC),
             "frames: notes/today"),
    Revision("41d3b8e0aa17" + "0" * 28, "laptop", datetime(2026, 11, 24, 21, 15, 0, tzinfo=UTC),
             "frames: notes/today"),
]
METRICS = Metrics(convergence=0.75, converged=3, concluded=4, conflict_rate=0.0833, frames_total=12,
                  frames_in_conflict=1, frames_invalid=0, frames_disagreeing=0, access_p95_ms=3.21,
                  access_samples=2, routes_per_goal=2.0, min_routes=1, goals=2, routes=4)
HISTORY = {
    "convergence": [(f"2026-11-25T0{i}:00:00Z", v) for i, v in enumerate([1.0, 1.0, 0.5, 0.67, 0.75, 0.75])],
    "conflict_rate": [(f"2026-11-25T0{i}:00:00Z", v) for i, v in enumerate([0.0, 0.0, 0.1, 0.25, 0.083, 0.083])],
    "access_p95_ms": [(f"2026-11-25T0{i}:00:00Z", v) for i, v in enumerate([2.1, 2.4, 9.8, 3.0, 3.3, 3.2])],
    "routes_per_goal": [(f"2026-11-25T0{i}:00:00Z", v) for i, v in enumerate([1.0, 1.0, 1.5, 2.0, 2.0, 2.0])],
}


class FakeService:
    """Fixed answers; decisions and restores are recorded in `calls`."""

    def __init__(self, *, syncthing_ok: bool = True, demo: Timeline | None = None) -> None:
        self.syncthing_ok = syncthing_ok
        self.timeline = demo
        self.calls: list[tuple] = []
        self.fail_with: Exception | None = None
        self.checked = threading.Event()  # a restore's checks end when it is set
        self.checked.set()
        self._lock = threading.Lock()

    def _record(self, *call) -> None:
        with self._lock:
            self.calls.append(call)
        if self.fail_with is not None:
            raise self.fail_with

    def status(self) -> NodeStatus:
        peers = [PeerStatus("desktop", DEVICES["desktop"], self.syncthing_ok or None, "127.0.0.1:22001",
                            "2026-11-25T07:59:30Z"),
                 PeerStatus("server", DEVICES["server"], False if self.syncthing_ok else None, None,
                            "2026-11-24T22:10:00Z")]
        base = dict(node="laptop", home=str(HOME), device_id=DEVICES["laptop"],
                    syncthing_url="http://127.0.0.1:8384", peers=peers)
        if not self.syncthing_ok:
            return NodeStatus(**base, syncthing_ok=False, syncthing_version=None,
                              syncthing_error="Nothing answers at http://127.0.0.1:8384; start Syncthing there "
                                              "(a node made with `init --managed` starts it with "
                                              "`twinsync syncthing start`).")
        folders = [FolderStatus("twinsync-frames", str(HOME / "frames.shared"), "sendreceive", "idle", 100.0,
                                ["desktop", "server"]),
                   FolderStatus("twinsync-recovery-desktop", str(HOME / "trace/recovery/desktop"), "receiveonly",
                                "idle", 100.0, ["desktop"]),
                   FolderStatus("twinsync-recovery-laptop", str(HOME / "trace/recovery/laptop"), "sendonly",
                                "idle", 100.0, ["desktop", "server"]),
                   FolderStatus("twinsync-recovery-server", str(HOME / "trace/recovery/server"), "receiveonly",
                                "syncing", 62.5, ["server"])]
        return NodeStatus(**base, syncthing_ok=True, syncthing_version="v1.19.2-ds1", syncthing_error=None,
                          folders=folders)

    def nodes(self) -> list[NodeRow]:
        laptop = _fingerprint("laptop", "2026-11-25T08:01:00Z", conflicts=1, forks=1,
                              metrics={"convergence": 0.75, "conflict_rate": 0.0833, "access_p95_ms": 3.21,
                                       "routes_per_goal": 2.0})
        desktop = _fingerprint("desktop", "2026-11-25T07:59:00Z")
        server = _fingerprint("server", "2026-11-24T22:05:00Z", root=ROOT_B, steps=12,
                              metrics={"convergence": None, "conflict_rate": 0.0, "access_p95_ms": 250.0,
                                       "routes_per_goal": None})
        ghost = FingerprintView(HOME / "trace/recovery/ghost/fingerprint.json", "ghost", False,
                                FingerprintProblem("bad_signature", "the signature does not verify with ghost's key"),
                                None, True, None)
        online = self.syncthing_ok or None
        return [NodeRow("desktop", DEVICES["desktop"], online, _view(desktop), True,
                        link={"rtt_ms": 2.71, "problem": None, "at": "2026-11-25T08:00:30Z"}),
                NodeRow("ghost", None, None, ghost, None),
                NodeRow("laptop", DEVICES["laptop"], True, _view(laptop), True),
                NodeRow("server", DEVICES["server"], False if self.syncthing_ok else None,
                        _view(server, stale=True), False, SERVER_PIECES,
                        link={"rtt_ms": None, "problem": "server does not answer at ws://192.168.1.20:22100 "
                                                        "(connection refused)", "at": "2026-11-25T08:00:30Z"})]

    def queue(self, *, history: bool = False) -> QueueData:
        if history:
            return QueueData([DECIDED], [], {}, history=True)
        return QueueData([CONFLICT, INVALID], [FORK], {SESSION: STEPS})

    def conflict_diff(self, item: ConflictItem) -> str:
        return DIFF if item.kind == "conflict" else item.reason or ""

    def decide_conflict(self, item_id: int, *, approve: bool) -> list[ConflictItem]:
        self._record("decide_conflict", item_id, approve)
        from dataclasses import replace
        return [replace(CONFLICT, status="approved" if approve else "rejected", decided_by="laptop",
                        decided_at="2026-11-25T08:10:00Z")]

    def decide_fork(self, fork_id: str, branch: str, verdict: str) -> ForkView:
        self._record("decide_fork", fork_id, branch, verdict)
        return FORK

    def snapshots(self) -> list[SnapshotInfo]:
        return list(SNAPSHOTS)

    def verify(self, info: SnapshotInfo) -> VerifiedSnapshot:
        self._record("verify", info.manifest_path.name)
        from folders.errors import TraceError
        if info.size is None:
            raise TraceError(f"{info.db_path.name} has not arrived yet; verify it again later.")
        return VerifiedSnapshot(info.node, info.seq, info.rows, info.sha256, info.created, info.merged,
                                info.db_path, info.manifest_path, info.size)

    def restore(self, info: SnapshotInfo, *, as_new_machine: bool = False, progress=None) -> RestoreReport:
        self._record("restore", info.manifest_path.name, as_new_machine)
        for done in range(0, 11):
            if progress is not None:
                progress(done, 10)
        self.checked.wait(30)
        return RestoreReport(info.manifest_path.name, info.node, info.rows, HOME / "trace.db.bak-20261125T080500Z",
                             MergeReport())

    def frames(self) -> list[FrameEntry]:
        return list(FRAMES)

    def frame_log(self, frame_id: str) -> list[Revision]:
        return list(REVISIONS)

    def revision_diff(self, frame_id: str, rev: str) -> str:
        return ("--- current version (by desktop)\n+++ revision 9c1e2a7b3f00 (by laptop)\n@@ -1,3 +1,3 @@\n {\n"
                '-  "text": "gym on Thursday"\n+  "text": "gym on Tuesday"\n }\n')

    def restore_frame(self, frame_id: str, rev: str) -> Frame:
        self._record("restore_frame", frame_id, rev)
        return Frame(frame_id, "laptop", "2026-11-25T08:10:00Z", (_h(2),), {"text": "old"}, _h(40), "ed25519:fake")

    def metrics(self) -> MetricsData:
        return MetricsData(METRICS, HISTORY)

    def traffic(self) -> list[PeerTraffic]:
        return [PeerTraffic("desktop", DEVICES["desktop"], True, False, 12_400.0, 1_900.0, 3, 48_000),
                PeerTraffic("server", DEVICES["server"], False, True, 0.0, 0.0, 0, 0)]

    def set_paused(self, peer: str, paused: bool) -> str:
        self._record("set_paused", peer, paused)
        return f"Peer {peer} {'paused' if paused else 'resumed'}."

    def rescan(self) -> list[str]:
        self._record("rescan")
        return ["twinsync-frames"]

    def unpair(self, peer: str, *, keep_recovery: bool) -> UnpairReport:
        self._record("unpair", peer, keep_recovery)
        return UnpairReport("laptop", peer, DEVICES[peer], ["twinsync-frames"], True, [],
                            "kept" if keep_recovery else "removed", str(HOME / "unpaired" / peer))


    def ask(self, goal: str) -> Answer:
        self._record("ask", goal)
        if goal == "plan the week":
            return Answer(goal, "move the gym to Tuesday", "desktop", PEER, routes=3, supporters=2,
                          newest="2026-11-25T07:58:02Z", elapsed_ms=4.2,
                          tried=(Attempt("server", "unreachable", "server does not answer at "
                                         "ws://192.168.1.20:22100 (connection refused)", 1.1, 0.41),
                                 Attempt("desktop", "answered", "", 3.0, 0.32)))
        return Answer(goal, None, None, NONE, elapsed_ms=2.5,
                      tried=(Attempt("desktop", "no conclusion", "desktop knows no conclusion for this goal",
                                     2.0, 0.1),))


    def watch(self, on_event, done) -> None:
        """No daemon to watch: the app looks again later."""

    def demo(self) -> TimelineView | None:
        return self.timeline.view() if self.timeline is not None else None

    def follow_demo(self, on_change):
        return self.timeline.follow(on_change) if self.timeline is not None else (lambda: None)


class BrokenService(FakeService):
    """Every read fails as a service would, to check errors reach the user as sentences."""

    def nodes(self) -> list[NodeRow]:
        raise SyncthingError("Syncthing refused GET /rest/system/connections (500: boom).")

    def queue(self, *, history: bool = False) -> QueueData:
        raise RuntimeError("an unexpected bug")
