"""`twinsync run`: the watcher daemon. One processing thread drains debounced frame
batches; the watchdog observers only add work. APScheduler runs the trace jobs (publish,
merge, and a merge soon after a peer's manifest arrives) on one worker of its own.

A failed batch is logged and retried on a later tick; it never stops the daemon. At start,
after an observer restart and hourly, a reconcile pass catches what the watcher missed
(inotify overflows are dropped silently, DESIGN §7).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timedelta, timezone

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from folders.errors import TwinsyncError
from folders.gitstore import FrameRepo
from folders.fingerprint import FINGERPRINT_NAME
from folders.snapshots import SEGMENTS_DIR, SNAPSHOTS_DIR
from orchestrator import recovery
from orchestrator.config import read_api_key
from orchestrator.events import MqttPublisher, SyncthingEvents
from orchestrator.batcher import Batch, Batcher
from orchestrator.node import Node
from orchestrator.pipeline import FramePipeline
from orchestrator.watcher import FrameWatcher
from syncthing.client import SyncthingClient
from syncthing.errors import SyncthingError
from syncthing.folderspec import RECOVERY_PREFIX

logger = logging.getLogger(__name__)

#: How often the loop wakes with nothing to do, to retry scans Syncthing missed.
TICK_S = 1.0
RETRY_DELAY_S = 2.0
#: How often an idle daemon lets Git pack the frames history.
GC_INTERVAL_S = 6 * 3600


class Daemon:
    def __init__(self, node: Node) -> None:
        self.node = node
        settings = node.config.frames
        self.batcher = Batcher(settings.quiet_ms / 1000, settings.max_wait_ms / 1000)
        self.stop_event = threading.Event()
        self._retries: list[tuple[float, Batch]] = []
        self._mqtt: MqttPublisher | None = None

    def stop(self) -> None:
        """Safe from a signal handler: the batch in flight finishes, then `run` returns."""
        self.stop_event.set()
        self.batcher.wake()

    def run(self) -> None:
        repo = FrameRepo(self.node.layout.frames_git)
        pipeline = FramePipeline(self.node, repo)
        watcher = FrameWatcher(self.node.layout.frames_shared, self.batcher.add,
                               self.batcher.request_reconcile)
        traces = self.node.config.traces
        # One worker: publish and merge both write trace.db, so they take turns.
        scheduler = BackgroundScheduler(timezone=timezone.utc, executors={"default": ThreadPoolExecutor(1)},
                                        job_defaults={"coalesce": True, "max_instances": 1})
        scheduler.add_job(self.batcher.request_reconcile, "interval",
                          seconds=self.node.config.frames.reconcile_interval_s, id="reconcile")
        scheduler.add_job(self._job, "interval", ["publish", recovery.publish_now],
                          seconds=traces.publish_interval_s, id="publish", next_run_time=datetime.now(timezone.utc))
        scheduler.add_job(self._job, "interval", ["merge", recovery.merge_now],
                          seconds=traces.merge_interval_s, id="merge", next_run_time=datetime.now(timezone.utc))
        arrivals = FrameWatcher(self.node.layout.recovery_root, lambda paths: self._peer_arrival(scheduler, paths),
                                lambda: None)
        self._mqtt = MqttPublisher(self.node.config.mqtt, self.node.name) if self.node.config.mqtt.host else None
        events = SyncthingEvents(SyncthingClient(self.node.config.syncthing_url, read_api_key(self.node.layout)),
                                 lambda event: self._syncthing_event(scheduler, event))
        watcher.start()
        arrivals.start()
        events.start()
        scheduler.start()
        self.batcher.request_reconcile()
        logger.info("twinsync daemon for %s watching %s", self.node.name, self.node.layout.frames_shared)
        next_gc = time.monotonic() + GC_INTERVAL_S
        try:
            while not self.stop_event.is_set():
                batch = self.batcher.next_batch(self.stop_event, TICK_S)
                if batch:
                    self._run_batch(pipeline, batch)
                elif time.monotonic() >= next_gc:  # in this thread: the only one using the repo
                    next_gc = time.monotonic() + GC_INTERVAL_S
                    try:
                        repo.gc()
                    except TwinsyncError as exc:
                        logger.warning("%s", exc)
                pipeline.flush_scans()
                self._requeue_due()
        finally:
            watcher.stop()
            arrivals.stop()
            events.stop()
            scheduler.shutdown(wait=True)
            if self._mqtt is not None:
                self._mqtt.close()
            repo.close()
            logger.info("twinsync daemon stopped")

    def _job(self, name: str, work) -> None:
        """A scheduled trace job: logged and retried on its next tick if it fails."""
        try:
            work(self.node)
            if self._mqtt is not None:
                fingerprint = self.node.layout.recovery(self.node.name) / FINGERPRINT_NAME
                if fingerprint.exists():
                    data = json.loads(fingerprint.read_text())
                    self._mqtt.publish("metrics", {"metrics": data["metrics"], "created": data["created"],
                                                   "pending_conflicts": data["pending_conflicts"],
                                                   "pending_forks": data["pending_forks"]}, retain=True)
        except (TwinsyncError, SyncthingError, OSError) as exc:
            logger.error("%s failed, retrying on the next tick: %s", name, exc)
        except Exception:  # noqa: BLE001 - a bug in one job must not end the daemon
            logger.exception("%s failed unexpectedly; retrying on the next tick", name)

    def _syncthing_event(self, scheduler: BackgroundScheduler, event: dict) -> None:
        """Live node status from Syncthing's events: logged, and sent to MQTT when configured."""
        data, kind = event.get("data") or {}, event.get("type")

        def name_of(device_id: str | None) -> str:  # read trusted.toml only for device events
            names = {p.device_id: name for name, p in self.node.peers().items()}
            return names.get(device_id, str(device_id or "")[:7])

        if kind in ("DeviceConnected", "DeviceDisconnected"):
            peer = name_of(data.get("id"))
            connected = kind == "DeviceConnected"
            logger.info("peer %s %s", peer, "connected" if connected else "disconnected")
            if self._mqtt is not None:
                self._mqtt.publish(f"peers/{peer}", {"connected": connected, "time": event.get("time")}, retain=True)
        elif kind == "FolderCompletion" and self._mqtt is not None:
            peer = name_of(data.get("device"))
            self._mqtt.publish(f"completion/{data.get('folder')}/{peer}", {"completion": data.get("completion")},
                               retain=True)
        elif kind == "ItemFinished" and str(data.get("folder", "")).startswith(RECOVERY_PREFIX):
            owner = str(data["folder"]).removeprefix(RECOVERY_PREFIX)
            self._peer_arrival(scheduler, {f"{owner}/{data.get('item', '')}"})

    def _peer_arrival(self, scheduler: BackgroundScheduler, paths: set[str]) -> None:
        """A peer's segment or snapshot manifest arrived: merge soon rather than at the next
        interval (a refreshed fingerprint.json is no reason to merge)."""
        def is_manifest(rel: str) -> bool:
            owner, _, rest = rel.partition("/")
            folder, _, name = rest.partition("/")
            return owner != self.node.name and folder in (SEGMENTS_DIR, SNAPSHOTS_DIR) and name.endswith(".json")

        if any(is_manifest(p) for p in paths):
            scheduler.modify_job("merge", next_run_time=datetime.now(timezone.utc) + timedelta(milliseconds=300))

    def _run_batch(self, pipeline: FramePipeline, batch: Batch) -> None:
        started = time.monotonic()
        try:
            pipeline.reload_trust()
            paths = batch.paths | (pipeline.changed_on_disk() if batch.reconcile else set())
            if not paths:
                return
            report = pipeline.process(paths)
        except (TwinsyncError, SyncthingError, OSError) as exc:
            logger.error("batch of %d path(s) failed, retrying in %.0f s: %s",
                         len(batch.paths), RETRY_DELAY_S, exc)
            self._retry_later(batch)
            return
        except Exception:  # noqa: BLE001 - a bug in one batch must not end the daemon
            logger.exception("batch of %d path(s) failed unexpectedly; retrying", len(batch.paths))
            self._retry_later(batch)
            return
        logger.info("batch: %s in %.0f ms%s", report.summary(), (time.monotonic() - started) * 1000,
                    " (reconcile)" if batch.reconcile else "")
        if self._mqtt is not None and (report.conflicts or report.invalid):
            self._mqtt.publish("conflicts", {"conflict_copies": report.conflicts, "invalid": report.invalid})

    def _retry_later(self, batch: Batch) -> None:
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
