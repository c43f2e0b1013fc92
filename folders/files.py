"""Crash-safe file writes: a reader (or Syncthing) sees the old file or the new one, never half;
and reads of files Syncthing replaces, which it does not replace that way."""

from __future__ import annotations

import os
import secrets
import time
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


def syncthing_temp_for(path: Path) -> Path:
    """The temporary file Syncthing pulls `path` into (lib/fs/tempname.go; Unix, names of up to 144 bytes)."""
    return path.with_name(f".syncthing.{path.name}.tmp")


def read_replicated(path: Path, limit: int, *, patience_s: float = 1.0) -> bytes:
    """Up to `limit` bytes of a file that Syncthing keeps up to date.

    Syncthing replaces a file by deleting the old one and then renaming its finished
    temporary file into place (lib/model/folder_sendrecv.go, performFinish), so a reader
    between the two finds no file. While the temporary file is there (or the file is back),
    the read is tried again, for at most `patience_s`; a file missing without either is
    missing at once (FileNotFoundError)."""
    path = Path(path)
    deadline = time.monotonic() + patience_s
    while True:
        try:
            with open(path, "rb") as fh:
                return fh.read(limit)
        except FileNotFoundError:
            if time.monotonic() >= deadline or not (syncthing_temp_for(path).exists() or path.exists()):
                raise
            time.sleep(0.002)
