"""watchdog on a folder (frames.shared/, the peers' recovery folders, the node home's own
files): turns file-system events into relative paths for a callback.

The observer thread only calls `on_change`; it never validates, commits or touches state
(toolong's watcher habit). Directory moves and deletions ask for a reconcile instead,
because their children get no events of their own.

watchdog's threads die quietly: an exception in a callback ends the observer, and deleting
the watched folder ends its inotify emitter, after which nothing is seen again. `run`
notices both and raises, so the daemon's supervisor starts a new observer (and, since
events were missed meanwhile, a reconcile).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (DirCreatedEvent, DirDeletedEvent, DirMovedEvent, FileClosedEvent,
                             FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent,
                             FileSystemEvent, FileSystemEventHandler)
from watchdog.observers import Observer

from folders.errors import TwinsyncError

logger = logging.getLogger(__name__)

#: How often `run` checks that watchdog's threads are still alive.
CHECK_S = 1.0
#: The events `_Handler` acts on. Not a file's being opened or read: with inotify, every read
#: of a watched file (Syncthing hashing a frame, the daemon reading trusted.toml, a CLI
#: reading the heartbeat) would otherwise wake watchdog's threads to build an event dropped
#: here; the filter leaves those out of the inotify mask, so the kernel never reports them.
#: Nor a folder's "modified" (one for every file made in it), which says nothing its files'
#: own events do not.
CHANGES = [FileCreatedEvent, FileModifiedEvent, FileDeletedEvent, FileMovedEvent, FileClosedEvent,
           DirCreatedEvent, DirDeletedEvent, DirMovedEvent]


class WatcherStopped(TwinsyncError):
    """watchdog stopped watching a folder (it was deleted, or a callback raised)."""


class _Handler(FileSystemEventHandler):
    def __init__(self, root: Path, on_change: Callable[[set[str]], None],
                 on_rescan: Callable[[], None]) -> None:
        self.root = root
        self.on_change = on_change
        self.on_rescan = on_rescan
        self.failure: Exception | None = None

    def dispatch(self, event: FileSystemEvent) -> None:
        """Keep the first exception of a callback for `run` to raise, instead of letting it
        end watchdog's observer thread with a traceback nobody reads."""
        try:
            super().dispatch(event)
        except Exception as exc:  # noqa: BLE001 - handed to the supervisor by `run`
            self.failure = self.failure or exc

    def _relative(self, raw: str | bytes) -> str | None:
        path = Path(raw.decode() if isinstance(raw, bytes) else raw)
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return None
        return rel.as_posix() if rel.parts else None

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, (DirDeletedEvent, DirMovedEvent)):
            self.on_rescan()
            return
        if event.is_directory and event.event_type != "created":
            return
        paths = {p for p in (self._relative(event.src_path),
                             self._relative(getattr(event, "dest_path", "") or "")) if p}
        if paths:
            self.on_change(paths)


class FrameWatcher:
    """Watches one folder for as long as `run` runs; no thread outlives it."""

    def __init__(self, root: Path, on_change: Callable[[set[str]], None],
                 on_rescan: Callable[[], None], *, recursive: bool = True) -> None:
        """`recursive=False` watches the files directly in `root` only (the node home's
        trace.db and its WAL, without the frames folders below)."""
        self.root = Path(root)
        self.on_change = on_change
        self.on_rescan = on_rescan
        self.recursive = recursive

    def run(self, stop: threading.Event) -> None:
        """Watch until `stop` is set; raises when watchdog stops watching. Asks for a rescan
        first, because whatever changed before the observer started was not seen."""
        handler = _Handler(self.root, self.on_change, self.on_rescan)
        observer = Observer()
        try:
            try:
                observer.schedule(handler, str(self.root), recursive=self.recursive, event_filter=CHANGES)
                observer.start()
            except OSError as exc:  # inotify's own error may not name the folder
                raise OSError(exc.errno, exc.strerror, str(self.root)) from None
            self.on_rescan()
            while not stop.wait(CHECK_S):
                if handler.failure is not None:
                    raise handler.failure
                if not observer.is_alive() or not all(e.is_alive() for e in observer.emitters):
                    raise WatcherStopped(f"watchdog stopped watching {self.root}"
                                         + ("" if self.root.is_dir() else " (the folder is gone)"))
        finally:
            observer.stop()  # also ends an emitter started before a failed start
            if observer.ident is not None:
                observer.join(timeout=10)
