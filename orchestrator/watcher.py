"""watchdog on frames.shared/: turns file-system events into relative paths for a callback.

The observer thread only calls `on_change`; it never validates, commits or touches state
(toolong's watcher habit). Directory moves and deletions ask for a reconcile instead,
because their children get no events of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (DirDeletedEvent, DirMovedEvent, FileSystemEvent,
                             FileSystemEventHandler)
from watchdog.observers import Observer

logger = logging.getLogger(__name__)


class _Handler(FileSystemEventHandler):
    def __init__(self, root: Path, on_change: Callable[[set[str]], None],
                 on_rescan: Callable[[], None]) -> None:
        self.root = root
        self.on_change = on_change
        self.on_rescan = on_rescan

    def _relative(self, raw: str | bytes) -> str | None:
        path = Path(raw.decode() if isinstance(raw, bytes) else raw)
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return None
        return rel.as_posix() if rel.parts else None

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
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
    """Owns one watchdog observer; `stop()` joins it so no thread outlives the daemon."""

    def __init__(self, root: Path, on_change: Callable[[set[str]], None],
                 on_rescan: Callable[[], None]) -> None:
        self.root = Path(root)
        self._observer = Observer()
        self._observer.schedule(_Handler(self.root, on_change, on_rescan), str(self.root), recursive=True)

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=10)
