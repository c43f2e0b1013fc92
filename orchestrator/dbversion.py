"""Whether an SQLite database or a file changed, for the price of a system call or two.

An idle daemon asks this of trace.db and state.db every few seconds before it reads them
whole (a 1M-step trace takes seconds to scan), and reads them only when they changed.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class DatabaseVersion:
    """`PRAGMA data_version` on a connection kept open here: it changes whenever another
    connection commits (the daemon's own writers, the CLI, a merge), and the file's identity,
    in case the database was swapped for another (a restore). Owned by one thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._held: tuple[tuple[int, ...], sqlite3.Connection] | None = None

    def current(self) -> tuple[Any, ...]:
        """Equal to an earlier answer only when nothing was committed in between."""
        identity = file_identity(self.path)[:2]
        if self._held is not None and self._held[0] != identity:
            self.close()
        if self._held is None:
            if not identity:
                return identity
            try:  # mode=rw: never creates a database that is not there
                conn = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, check_same_thread=False)
            except sqlite3.Error:
                return identity
            self._held = (identity, conn)
        try:
            return identity, self._held[1].execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            self.close()
            return identity

    def writer(self) -> sqlite3.Connection | None:
        """The connection held here (None before `current()` found the database): what is
        committed through it does not change `current()`, since data_version moves only
        for other connections' commits. A watcher writes its own bookkeeping with it."""
        return self._held[1] if self._held is not None else None

    def close(self) -> None:
        if self._held is not None:
            self._held[1].close()
            self._held = None


class Memo:
    """Results computed from one database and brought up to date when it changed, rather
    than computed whole again. Owned by one thread."""

    def __init__(self, path: Path) -> None:
        self._version = DatabaseVersion(path)
        self._kept: dict[str, tuple[tuple[Any, ...] | None, Any]] = {}

    def carry(self, name: str, update: Callable[[T | None], T]) -> T:
        """The result kept under `name` while the database is unchanged; after a change,
        `update` gets it (None the first time) and returns it brought up to date. The
        version is taken before updating: a commit meanwhile shows at the next call."""
        at = self._version.current()
        kept_at, value = self._kept.get(name, (None, None))
        if name not in self._kept or kept_at != at:
            value = update(value)
            self._kept[name] = (at, value)
        return value

    def close(self) -> None:
        self._version.close()


def file_identity(path: Path) -> tuple[int, ...]:
    """(device, inode, size, mtime, ctime) of a file, () when there is none: a file replaced
    by a rename (Syncthing's way, and ours) is a new inode even when its size and times
    agree, and one written in place gets a new ctime, which no one can set back."""
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
