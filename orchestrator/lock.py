"""One writer at a time for frames.git and the frame index: the daemon and a CLI command
(`frame put`, `approve`, ...) take the same lock, so their commits never interleave."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def frames_lock(home: Path) -> Iterator[None]:
    with open(Path(home) / "frames.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
