"""Crash-safe file writes: a reader (or Syncthing) sees the old file or the new one, never half."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

#: Prefix of our temporary files; Syncthing and Git are told to ignore it.
TEMP_PREFIX = ".twinsync-tmp-"


def temp_path_for(path: Path) -> Path:
    """A sibling name that Syncthing's ignore patterns and Git skip."""
    return path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(4)}-{path.name}")


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temp sibling, fsync, rename over `path`, then fsync the directory."""
    path = Path(path)
    tmp = temp_path_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename durable: the directory entry must reach the disk too."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
