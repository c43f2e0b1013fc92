"""Debounced batches: wait for a quiet gap, but never longer than a maximum, so a burst of
10,000 files is one batch (one Git commit per author) and a lone edit is committed within
~200 ms.

Files that Syncthing brings need no quiet gap: Syncthing says when it wrote one whole
(`arrived`, from its ItemFinished events) and when the pull that brought it is over (`settled`,
the folder is idle again). A batch whose every path Syncthing reported is ready as soon as no
frames folder is still pulling, so a lone frame from a peer is committed at once, while a burst
stays one batch: the folder goes idle only after its last file. A path written here (not
reported by Syncthing) keeps the quiet gap for the whole batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Batch:
    paths: set[str] = field(default_factory=set)
    reconcile: bool = False
    synced: set[str] = field(default_factory=set)  # paths Syncthing wrote whole: it has them

    def __bool__(self) -> bool:
        return bool(self.paths) or self.reconcile


class Batcher:
    """Filled from watcher, event and scheduler threads, drained by the one processing thread."""

    def __init__(self, quiet_s: float, max_wait_s: float, clock: Callable[[], float] = time.monotonic,
                 inert: Callable[[str], bool] = lambda rel: False) -> None:
        """`inert` tells the paths a batch ignores (temp files, such as the one Syncthing
        renames into place): they never hold a batch back."""
        self.quiet_s = quiet_s
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._inert = inert
        self._cond = threading.Condition()
        self._pending = Batch()
        self._first = self._last = 0.0
        self._arrived: set[str] = set()  # pending paths Syncthing wrote whole
        self._holding: set[str] = set()  # pending paths written here: they need the quiet gap
        self._pulling: set[str] = set()  # folders whose pull reported files and is not over

    def add(self, paths: set[str]) -> None:
        with self._cond:
            self._add(paths)
            self._holding |= {p for p in paths if p not in self._arrived and not self._inert(p)}
            self._cond.notify_all()

    def arrived(self, folder: str, paths: set[str]) -> None:
        """Syncthing finished writing `paths` into `folder`; more may follow in the same pull."""
        with self._cond:
            self._add(paths)
            self._arrived |= paths
            self._holding -= paths
            self._pulling.add(folder)
            self._cond.notify_all()

    def settled(self, folder: str) -> None:
        """`folder` is idle again: the pull that brought its arrivals is over."""
        with self._cond:
            self._pulling.discard(folder)
            self._cond.notify_all()

    def _add(self, paths: set[str]) -> None:
        now = self._clock()
        if not self._pending:
            self._first = now
        self._pending.paths |= paths
        self._last = now

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

    def _ready_at(self) -> float:
        pending = self._pending
        if self._arrived and not (self._holding or self._pulling or pending.reconcile):
            return self._first  # Syncthing wrote every path and has nothing more in flight
        return min(self._last + self.quiet_s, self._first + self.max_wait_s)

    def next_batch(self, stop: threading.Event, timeout: float) -> Batch:
        """The next ready batch, or an empty one after `timeout` or once `stop` is set."""
        deadline = self._clock() + timeout
        with self._cond:
            while not stop.is_set():
                now = self._clock()
                if self._pending:
                    ready_at = self._ready_at()
                    if now >= ready_at:
                        batch, self._pending = self._pending, Batch()
                        batch.synced = self._arrived & batch.paths
                        self._arrived.clear()
                        self._holding.clear()
                        return batch
                    wait = min(ready_at, deadline) - now
                else:
                    wait = deadline - now
                if wait <= 0:
                    break
                self._cond.wait(wait)
        return Batch()
