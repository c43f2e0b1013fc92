"""Log lines into a file while a screen is ours (the TUI, the demo's output): a warning
written to stderr would land in the middle of it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def logs_to(path: Path) -> Iterator[Path]:
    """Every log line goes to `path` (appended) instead of the usual handlers, until the end."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [handler]
    try:
        yield path
    finally:
        root.handlers[:] = saved
        handler.close()
