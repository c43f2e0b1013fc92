"""`twinsync run`: the watcher daemon. One processing thread drains debounced batches; the
watchdog observer and APScheduler only add work to the batcher.

A failed batch is logged and retried on a later tick; it never stops the daemon. At start,
after an observer restart and hourly, a reconcile pass catches what the watcher missed
(inotify overflows are dropped silently, DESIGN §7).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timezone

from apscheduler.schedulers.background import BackgroundScheduler

from folders.errors import TwinsyncError
from folders.gitstore import FrameRepo
from orchestrator.batcher import Batch, Batcher
from orchestrator.node import Node
from orchestrator.pipeline import FramePipeline
from orchestrator.watcher import FrameWatcher
from syncthing.errors import SyncthingError

logger = logging.getLogger(__name__)

#: How often the loop wakes with nothing to do, to retry scans Syncthing missed.
TICK_S = 1.0
RETRY_DELAY_S = 2.0


class Daemon:
    def __init__(self, node: Node) -> None:
        self.node = node
        settings = node.config.frames
        self.batcher = Batcher(settings.quiet_ms / 1000, settings.max_wait_ms / 1000)
        self.stop_event = threading.Event()
        self._retries: list[tuple[float, Batch]] = []

    def stop(self) -> None:
        """Safe from a signal handler: the batch in flight finishes, then `run` returns."""
        self.stop_event.set()
        self.batcher.wake()

    def run(self) -> None:
        repo = FrameRepo(self.node.layout.frames_git)
        pipeline = FramePipeline(self.node, repo)
        watcher = FrameWatcher(self.node.layout.frames_shared, self.batcher.add,
                               self.batcher.request_reconcile)
        scheduler = BackgroundScheduler(timezone=timezone.utc)
        scheduler.add_job(self.batcher.request_reconcile, "interval",
                          seconds=self.node.config.frames.reconcile_interval_s, id="reconcile")
        watcher.start()
        scheduler.start()
        self.batcher.request_reconcile()
        logger.info("twinsync daemon for %s watching %s", self.node.name, self.node.layout.frames_shared)
        try:
            while not self.stop_event.is_set():
                batch = self.batcher.next_batch(self.stop_event, TICK_S)
                if batch:
                    self._run_batch(pipeline, batch)
                pipeline.flush_scans()
                self._requeue_due()
        finally:
            watcher.stop()
            scheduler.shutdown(wait=True)
            repo.close()
            logger.info("twinsync daemon stopped")

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
