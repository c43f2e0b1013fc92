"""`twinsync run`: the watcher daemon. A batch loop drains debounced frame batches; the
watchdog observers only add work. APScheduler runs the trace jobs (publish, merge, and a
merge soon after a peer's manifest arrives) on one worker of its own.

Every piece runs under one `Supervisor`: a piece that raises is logged with its cause and
started again after a backoff, a failed batch is retried a little later, a failed job on a
later tick; nothing stops the daemon but a signal. The main thread holds the home's daemon
lock (one daemon per home) and writes the heartbeat that `status`, `doctor` and the TUI
read. At start, after a watcher restart and hourly, a reconcile pass catches what the
watcher missed (inotify overflows are dropped silently, DESIGN §7). Changes made on this
machine to a peer's recovery folder are reverted (`LocalChangeGuard`) when Syncthing's
folder summary shows them, at (re)subscription and every minute.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import TYPE_CHECKING, Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from folders.errors import TwinsyncError
from folders.gitstore import FrameRepo
from folders.fingerprint import FINGERPRINT_NAME
from folders.snapshots import SEGMENTS_DIR, SNAPSHOTS_DIR
from folders.segments import waiting_to_publish
from folders.trace import connect, format_ts, utc_now
from orchestrator import ask, modules, recovery
from orchestrator.alerts import AlertLoop, desktop_notifier
from orchestrator.events import EVENT_TYPES, MQTT_EVENT_TYPES, MqttPublisher, SyncthingEvents
from orchestrator.batcher import Batch, Batcher
from orchestrator.dbversion import DatabaseVersion, Memo
from orchestrator.fingerprint_inputs import FingerprintInputs
from orchestrator.heartbeat import HEARTBEAT_INTERVAL_S, Heartbeat, write_heartbeat
from orchestrator.localchanges import LocalChangeGuard
from orchestrator.lock import daemon_lock
from orchestrator.node import Node, syncthing_client
from orchestrator.pipeline import FramePipeline, classify
from orchestrator.supervisor import Supervisor
from orchestrator.traces import ForkWatch
from orchestrator.watcher import FrameWatcher
from syncthing.errors import SyncthingError
from syncthing.folderspec import RECOVERY_PREFIX, frames_path

if TYPE_CHECKING:
    from orchestrator.link import LinkPool, LinkServer

logger = logging.getLogger(__name__)

#: How often the batch loop wakes with nothing to do (to retry scans Syncthing missed), and
#: the main thread (to see a stop, and write the heartbeat when due).
TICK_S = 1.0
RETRY_DELAY_S = 2.0
#: How often an idle daemon lets Git pack the frames history.
GC_INTERVAL_S = 6 * 3600
#: How often every peer's recovery folder is checked for local changes besides the events.
LOCAL_CHANGES_INTERVAL_S = 60
#: How often the modules folder is checked even when the watcher saw nothing.
MODULES_SCAN_S = 300
#: After a change in modules.shared/, how long to wait for the rest of the files.
MODULES_SETTLE_S = 0.5
#: trace.db and its WAL, whose changes wake the look for sessions finished here.
TRACE_FILES = frozenset({"trace.db", "trace.db-wal"})
#: How often that look runs anyway, should a change be missed (the watcher restarting).
FINISH_FALLBACK_S = 5.0
#: How often the daemon measures each peer link's round trip (shown by `nodes` and the TUI).
LINK_CHECK_S = 30
#: The first check, this soon after the link is up.
LINK_FIRST_CHECK_S = 3
#: A publish or merge that changed something has the fingerprint refreshed this soon after:
#: while sessions finish and peers publish every second, one refresh covers them all.
FINGERPRINT_COALESCE_S = 2.0
#: Errors a user can act on: logged as one line. Anything else is a bug: logged with its traceback.
EXPECTED = (TwinsyncError, SyncthingError, OSError)


class Daemon:
    def __init__(self, node: Node) -> None:
        self.node = node
        settings = node.config.frames
        self.batcher = Batcher(settings.quiet_ms / 1000, settings.max_wait_ms / 1000,
                               inert=lambda rel: classify(rel) == "ignore")
        self.stop_event = threading.Event()
        self._beat = threading.Event()  # set: write the heartbeat now (a piece's health changed)
        self._trace_changed = threading.Event()  # set: trace.db or its WAL was written
        self.supervisor = Supervisor(expected=EXPECTED, on_change=self._beat.set)
        self._started = format_ts(utc_now())
        self._last: dict[str, str] = {}  # "batch", "merge", "publish" -> when it last succeeded
        self._retries: list[tuple[float, Batch]] = []
        self._mqtt: MqttPublisher | None = None
        self._guard: LocalChangeGuard | None = None
        self._link_port: int | None = None
        self._links: dict[str, dict[str, Any]] = {}
        self._pool: LinkPool | None = None  # links to the peers kept open for this node's questions
        self._server: LinkServer | None = None

    def stop(self) -> None:
        """Safe from a signal handler (it takes no lock the main thread may hold): the batch
        in flight finishes, then `run` returns."""
        self.stop_event.set()

    def run(self) -> None:
        """Raises `DaemonRunningError` when another daemon runs for this home."""
        with daemon_lock(self.node.layout.home):
            self._write_heartbeat()
            self._run()

    def _run(self) -> None:
        sup, layout = self.supervisor, self.node.layout
        traces = self.node.config.traces
        # One worker: publish and merge both write trace.db, so they take turns.
        scheduler = BackgroundScheduler(timezone=timezone.utc, executors={"default": ThreadPoolExecutor(1)},
                                        job_defaults={"coalesce": True, "max_instances": 1,
                                                      "misfire_grace_time": None})  # late is fine
        scheduler.add_job(sup.call, "interval", ["reconcile", self.batcher.request_reconcile],
                          seconds=self.node.config.frames.reconcile_interval_s, id="reconcile")
        scheduler.add_job(self._job, "interval", ["publish", partial(recovery.publish_now, refresh=False)],
                          seconds=traces.publish_interval_s, id="publish", next_run_time=datetime.now(timezone.utc))
        scheduler.add_job(self._job, "interval", ["merge", partial(recovery.merge_now, refresh=False)],
                          seconds=traces.merge_interval_s, id="merge", next_run_time=datetime.now(timezone.utc))
        # Also the staleness refresh: it rewrites only what changed or is half-way to stale,
        # and reads nothing while none of its inputs changed.
        inputs, trace = FingerprintInputs(self.node), Memo(layout.trace_db)  # the scheduler thread's
        forks = ForkWatch(self.node)  # shared with the alerts: a change of the trace is scanned once
        scheduler.add_job(self._job, "interval", ["fingerprint", partial(recovery.announce_fingerprint, inputs=inputs,
                                                                          trace=trace, forks=forks)],
                          seconds=traces.publish_interval_s, id="fingerprint",
                          next_run_time=datetime.now(timezone.utc))
        scheduler.add_job(self._job, "interval", ["modules", modules.scan], seconds=MODULES_SCAN_S, id="modules",
                          next_run_time=datetime.now(timezone.utc))
        watcher = FrameWatcher(layout.frames_shared, self.batcher.add, self.batcher.request_reconcile)
        trace_watcher = FrameWatcher(layout.home, self._trace_written, self._trace_changed.set, recursive=False)
        modules.ensure_modules_home(layout)
        module_watcher = FrameWatcher(layout.modules_shared, lambda paths: self._scan_modules_soon(scheduler),
                                      lambda: self._scan_modules_soon(scheduler))
        arrivals = FrameWatcher(layout.recovery_root, lambda paths: self._peer_arrival(scheduler, paths),
                                lambda: self._merge_soon(scheduler))
        events_client = syncthing_client(layout, self.node.config)
        guard_client = syncthing_client(layout, self.node.config)
        self._guard = LocalChangeGuard(self.node, guard_client)
        scheduler.add_job(sup.call, "interval", ["local-changes", self._check_local_changes],
                          seconds=LOCAL_CHANGES_INTERVAL_S, id="local-changes")
        events = SyncthingEvents(events_client, lambda event: self._syncthing_event(scheduler, event),
                                 on_state=lambda problem: sup.report("syncthing-events", problem),
                                 on_resync=lambda connections: self._resync(scheduler, connections),
                                 types=EVENT_TYPES + (MQTT_EVENT_TYPES if self.node.config.mqtt.host else []))
        alerts = AlertLoop(self.node, forks, notifier=desktop_notifier(self.node.config.alerts),
                           on_state=lambda problem: sup.report("alerts", problem))
        if self.node.config.mqtt.host:
            self._mqtt = MqttPublisher(self.node.config.mqtt, self.node.name,
                                       on_state=lambda problem: sup.report("mqtt", problem),
                                       on_online=alerts.resend)
        alerts.mqtt = self._mqtt
        link = self._link_server()
        self._scheduler = scheduler
        scheduler.start()
        try:
            sup.spawn("batches", self._process_batches, on_stop=self.batcher.wake)
            sup.spawn("finishes", self._watch_finishes, on_stop=self._trace_changed.set)
            sup.spawn("trace-watcher", trace_watcher.run)
            sup.spawn("frames-watcher", watcher.run)
            sup.spawn("arrivals-watcher", arrivals.run)
            sup.spawn("modules-watcher", module_watcher.run)
            sup.spawn("syncthing-events", events.run)
            sup.spawn("alerts", alerts.run)
            if self._mqtt is not None:
                sup.spawn("mqtt", self._mqtt.run, on_stop=self._mqtt.close)
            if link is not None:
                sup.spawn("link", link.run)
                sup.spawn("link-check", self._check_links)
            logger.info("twinsync daemon for %s (pid %d) watching %s", self.node.name, os.getpid(),
                        layout.frames_shared)
            next_beat = 0.0
            while not self.stop_event.is_set():
                if self._beat.is_set() or time.monotonic() >= next_beat:
                    self._beat.clear()
                    self._write_heartbeat()
                    next_beat = time.monotonic() + HEARTBEAT_INTERVAL_S
                self._beat.wait(TICK_S)
        finally:
            sup.stop()  # the batch in flight finishes
            scheduler.shutdown(wait=True)  # so does a publish or merge in flight
            events_client.close()
            guard_client.close()
            inputs.close()
            trace.close()
            forks.close()
            self._link_port = None
            if self._pool is not None:
                self._pool.close()
            self._write_heartbeat()
            logger.info("twinsync daemon stopped")

    # -- heartbeat -----------------------------------------------------------------------

    def _write_heartbeat(self) -> None:
        beat = Heartbeat(pid=os.getpid(), started=self._started, written=format_ts(utc_now()),
                         last_batch=self._last.get("batch"), last_merge=self._last.get("merge"),
                         last_publish=self._last.get("publish"), pieces=self.supervisor.health(),
                         link_port=self._link_port, links=dict(self._links))
        try:
            write_heartbeat(self.node.layout.home, beat)
        except OSError as exc:
            logger.warning("cannot write the heartbeat: %s", exc)

    def _trace_written(self, paths: set[str]) -> None:
        if paths & TRACE_FILES:
            self._trace_changed.set()

    def _watch_finishes(self, stop: threading.Event) -> None:
        """A session finished on this node is published at once (a peer that asks about it
        gets it, DESIGN §8), not at the next publish interval. The look is woken by the
        trace watcher (inotify on the node home: an idle daemon does not poll), its query
        runs only when trace.db or its WAL changed, and a publish only for a session not
        seen finished before (one that COHERENCE-CHECK refuses stays finished, and is not
        published again and again)."""
        seen: set[str] = set()
        last = None
        version = DatabaseVersion(self.node.layout.trace_db)
        try:
            while not stop.is_set():
                self._trace_changed.wait(FINISH_FALLBACK_S)
                self._trace_changed.clear()  # before looking: a write meanwhile wakes the next look
                mark = version.current()
                if stop.is_set() or mark == last:
                    continue
                last = mark
                self._publish_if_finished(seen)
        finally:
            version.close()

    def _publish_if_finished(self, seen: set[str]) -> None:
        """Publish now when a session not seen finished before is waiting (`seen` is updated)."""
        conn = connect(self.node.layout.trace_db)
        try:
            finished = set(waiting_to_publish(conn, self.node.name))
        finally:
            conn.close()
        if finished - seen:
            self._scheduler.modify_job("publish", next_run_time=datetime.now(timezone.utc))
        seen.clear()
        seen.update(finished)

    # -- the peer link -----------------------------------------------------------------------

    def _link_server(self) -> LinkServer | None:
        """The endpoint peers ask (DESIGN §8), its port taken now so that the first
        fingerprint announces it; None while [link] listen is empty or the port cannot be
        had (said in the log and the daemon's health). It answers with a Node of its own,
        so its Syncthing client is never shared across threads."""
        if not self.node.config.link.listen:
            return None
        from orchestrator.link import LinkError, LinkPool, LinkServer  # websockets: only for a node with a link

        answering = Node.open(self.node.layout.home)
        self._pool = LinkPool(self.node.name, self.node.signing_key())
        server = LinkServer(self.node.name, self.node.signing_key(), answering.trusted_keys,
                            lambda peer, request: ask.serve(answering, peer, request, self._pool),
                            self.node.config.link.listen)
        try:
            self._link_port = server.bind()
        except LinkError as exc:
            logger.error("%s", exc)
            self.supervisor.report("link", str(exc))
            return None
        self._write_heartbeat()  # before the first publish, which reads the port from it
        self._server = server
        return server

    def _check_links(self, stop: threading.Event) -> None:
        """Each peer's link, pinged every LINK_CHECK_S: round trip or why not, for `nodes`.
        The first check comes LINK_FIRST_CHECK_S after the link is up, so `nodes` soon
        shows it; a node without peers then checks at the same slow pace (it asks Syncthing
        who its peers are), and the heartbeat is rewritten only when the links changed."""
        checked = False
        with Node.open(self.node.layout.home) as checking:
            while not stop.wait(LINK_CHECK_S if checked else LINK_FIRST_CHECK_S):
                if self._link_port is None:
                    continue
                links, checked = ask.link_status(checking), True
                if links != self._links:
                    self._links = links
                    self._beat.set()

    # -- pieces ----------------------------------------------------------------------------

    def _process_batches(self, stop: threading.Event) -> None:
        """The batch loop: the only thread that commits frames (and packs the repo)."""
        repo = FrameRepo(self.node.layout.frames_git)
        try:
            pipeline = FramePipeline(self.node, repo)
            next_gc = time.monotonic() + GC_INTERVAL_S
            while not stop.is_set():
                batch = self.batcher.next_batch(stop, TICK_S)
                if batch:
                    self._run_batch(pipeline, batch)
                elif time.monotonic() >= next_gc:
                    next_gc = time.monotonic() + GC_INTERVAL_S
                    try:
                        repo.gc()
                    except TwinsyncError as exc:
                        logger.warning("%s", exc)
                pipeline.flush_scans()
                self._requeue_due()
        finally:
            repo.close()

    def _job(self, name: str, work) -> None:
        """A scheduled trace job, supervised: a failure is logged, the job backs off; one
        that changed something tells this node's watching TUI at once (`_tell`)."""
        reports: list[Any] = []
        if self.supervisor.call(name, lambda node: reports.append(work(node)), self.node):
            self._last[name] = format_ts(utc_now())
            self._publish_metrics()
            if reports and _changed(reports[0]):
                self._tell({"kind": name})
                if name in ("publish", "merge"):
                    self._fingerprint_soon()

    def _fingerprint_soon(self) -> None:
        """Refresh the fingerprint within FINGERPRINT_COALESCE_S, once for all the publishes
        and merges until then (never pushed later by the next one)."""
        soon = datetime.now(timezone.utc) + timedelta(seconds=FINGERPRINT_COALESCE_S)
        job = self._scheduler.get_job("fingerprint")
        if job is not None and (job.next_run_time is None or job.next_run_time > soon):
            self._scheduler.modify_job("fingerprint", next_run_time=soon)

    def _tell(self, event: dict[str, Any]) -> None:
        """An event for this node's own watchers over the link (the TUI refreshes on it)."""
        if self._server is not None:
            self._server.publish({**event, "time": format_ts(utc_now())})

    def _publish_metrics(self) -> None:
        if self._mqtt is None:
            return
        fingerprint = self.node.layout.recovery(self.node.name) / FINGERPRINT_NAME
        try:
            data = json.loads(fingerprint.read_text())
        except (OSError, ValueError):
            return
        self._mqtt.publish("metrics", {"metrics": data["metrics"], "created": data["created"],
                                       "pending_conflicts": data["pending_conflicts"],
                                       "pending_forks": data["pending_forks"]}, retain=True)

    def _resync(self, scheduler: BackgroundScheduler, connections: dict[str, dict[str, Any]]) -> None:
        """The event stream (re)subscribed: the peers' connections and the arrivals it may
        have missed meanwhile are caught up here."""
        now = format_ts(utc_now())
        for name, peer in self.node.peers().items():
            connection = connections.get(peer.device_id)
            if connection is not None:
                self._peer_status(name, bool(connection.get("connected")), now, "not connected")
        self.supervisor.call("local-changes", self._check_local_changes)
        self._merge_soon(scheduler)

    def _check_local_changes(self) -> None:
        """Syncthing away is the event stream's to report; the check runs again on its return."""
        try:
            self._guard.check()
        except SyncthingError as exc:
            logger.debug("local changes not checked: %s", exc)

    def _peer_status(self, peer: str, connected: bool, when: str | None, down_word: str = "disconnected") -> None:
        logger.info("peer %s %s", peer, "connected" if connected else down_word)
        if self._mqtt is not None:
            self._mqtt.publish(f"peers/{peer}", {"connected": connected, "time": when}, retain=True)

    def _peer_name(self, device_id: str | None) -> str:
        names = {p.device_id: name for name, p in self.node.peers().items()}  # trusted.toml, read now
        return names.get(device_id, str(device_id or "")[:7])

    def _merge_soon(self, scheduler: BackgroundScheduler) -> None:
        scheduler.modify_job("merge", next_run_time=datetime.now(timezone.utc) + timedelta(milliseconds=300))

    def _scan_modules_soon(self, scheduler: BackgroundScheduler) -> None:
        """Something changed in modules.shared/: check it soon (new versions are queued for a
        person, tampered ones refused), once the files of one publish have settled."""
        scheduler.modify_job("modules", next_run_time=datetime.now(timezone.utc) + timedelta(seconds=MODULES_SETTLE_S))

    def _syncthing_event(self, scheduler: BackgroundScheduler, event: dict) -> None:
        """Live node status from Syncthing's events: logged, and sent to MQTT when configured;
        a folder summary with local changes in a peer's recovery folder reverts them."""
        data, kind = event.get("data") or {}, event.get("type")
        if kind in ("DeviceConnected", "DeviceDisconnected"):
            self._peer_status(self._peer_name(data.get("id")), kind == "DeviceConnected", event.get("time"))
        elif kind == "FolderCompletion" and self._mqtt is not None:
            peer = self._peer_name(data.get("device"))
            self._mqtt.publish(f"completion/{data.get('folder')}/{peer}", {"completion": data.get("completion")},
                               retain=True)
        elif kind == "FolderSummary":
            try:
                self._guard.on_summary(str(data.get("folder", "")), data.get("summary") or {})
            except SyncthingError as exc:
                logger.warning("local changes in %s not reverted yet: %s", data.get("folder"), exc)
        elif kind == "ItemFinished" and str(data.get("folder", "")).startswith(RECOVERY_PREFIX):
            owner = str(data["folder"]).removeprefix(RECOVERY_PREFIX)
            self._peer_arrival(scheduler, {f"{owner}/{data.get('item', '')}"})
        elif kind == "ItemFinished" and data.get("error") is None:
            frame = frames_path(str(data.get("folder", "")), str(data.get("item", "")))
            if frame is not None:  # Syncthing wrote it whole: its batch need not wait for quiet
                self.batcher.arrived(data["folder"], {frame})
        elif kind == "StateChanged" and data.get("to") == "idle":
            self.batcher.settled(str(data.get("folder", "")))

    def _peer_arrival(self, scheduler: BackgroundScheduler, paths: set[str]) -> None:
        """A peer's segment or snapshot manifest arrived: merge soon rather than at the next
        interval (a refreshed fingerprint.json is no reason to merge)."""
        def is_manifest(rel: str) -> bool:
            owner, _, rest = rel.partition("/")
            folder, _, name = rest.partition("/")
            return owner != self.node.name and folder in (SEGMENTS_DIR, SNAPSHOTS_DIR) and name.endswith(".json")

        if any(is_manifest(p) for p in paths):
            self._merge_soon(scheduler)

    def _run_batch(self, pipeline: FramePipeline, batch: Batch) -> None:
        started = time.monotonic()
        try:
            pipeline.reload_trust()
            paths = batch.paths | (pipeline.changed_on_disk() if batch.reconcile else set())
            if not paths:
                return
            report = pipeline.process(paths, synced=batch.synced)
        except EXPECTED as exc:
            logger.error("batch of %d path(s) failed, retrying in %.0f s: %s",
                         len(batch.paths), RETRY_DELAY_S, exc)
            self._retry_later(batch, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a bug in one batch must not end the daemon
            logger.exception("batch of %d path(s) failed unexpectedly; retrying", len(batch.paths))
            self._retry_later(batch, f"{type(exc).__name__}: {exc}")
            return
        self._last["batch"] = format_ts(utc_now())
        self.supervisor.report("batches", None)
        logger.info("batch: %s in %.0f ms%s", report.summary(), (time.monotonic() - started) * 1000,
                    " (reconcile)" if batch.reconcile else "")
        if self._mqtt is not None and (report.conflicts or report.invalid):
            self._mqtt.publish("conflicts", {"conflict_copies": report.conflicts, "invalid": report.invalid})
        self._tell({"kind": "frames", "summary": report.summary()})

    def _retry_later(self, batch: Batch, problem: str) -> None:
        self.supervisor.report("batches", f"a batch failed, retrying in {RETRY_DELAY_S:.0f} s: {problem}")
        self._retries.append((time.monotonic() + RETRY_DELAY_S, batch))

    def _requeue_due(self) -> None:
        now = time.monotonic()
        due = [b for t, b in self._retries if t <= now]
        self._retries = [(t, b) for t, b in self._retries if t > now]
        for batch in due:
            if batch.paths:
                self.batcher.add(batch.paths)
            if batch.reconcile:
                self.batcher.request_reconcile()


def _changed(report: Any) -> bool:
    """Whether a job's report says it changed what a person sees: steps merged (or a piece
    refused), a segment or snapshot published, a module version queued or refused, the
    fingerprint rewritten."""
    if isinstance(report, recovery.MergeReport):
        return bool(report.merged or report.bridged or report.refused)
    if isinstance(report, recovery.PublishReport):
        return bool(report.segment or report.snapshot)
    if isinstance(report, modules.ScanReport):
        return bool(report.queued or report.refused)
    if isinstance(report, bool):  # the fingerprint: rewritten or not
        return report
    return True
