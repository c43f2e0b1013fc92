"""Debounced batches: wait for a quiet gap, but never longer than a maximum, so a burst of
10,000 files is one batch (one Git commit) and a lone edit is committed within ~200 ms."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Batch:
    paths: set[str] = field(default_factory=set)
    reconcile: bool = False

    def __bool__(self) -> bool:
        return bool(self.paths) or self.reconcile


class Batcher:
    """Filled from watcher and scheduler threads, drained by the one processing thread."""

    def __init__(self, quiet_s: float, max_wait_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet_s = quiet_s
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._cond = threading.Condition()
        self._pending = Batch()
        self._first = self._last = 0.0

    def add(self, paths: set[str]) -> None:
        with self._cond:
            now = self._clock()
            if not self._pending:
                self._first = now
            self._pending.paths |= paths
            self._last = now
            self._cond.notify_all()

    def request_reconcile(self) -> None:
        with self._cond:
            if not self._pending:
                self._first = self._last = self._clock()
            self._pending.reconcile = True
            self._cond.notify_all()

    def wake(self) -> None:
        """Let `next_batch` return early (used on shutdown)."""
        with self._cond:
            self._cond.notify_all()

    def next_batch(self, stop: threading.Event, timeout: float) -> Batch:
        """The next ready batch, or an empty one after `timeout` or once `stop` is set."""
        deadline = self._clock() + timeout
        with self._cond:
            while not stop.is_set():
                now = self._clock()
                if self._pending:
                    ready_at = min(self._last + self.quiet_s, self._first + self.max_wait_s)
                    if now >= ready_at:
                        batch, self._pending = self._pending, Batch()
                        return batch
                    wait = min(ready_at, deadline) - now
                else:
                    wait = deadline - now
                if wait <= 0:
                    break
                self._cond.wait(wait)
        return Batch()
