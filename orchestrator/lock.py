"""The locks of a node home.

`frames_lock`: one writer at a time for frames.git and the frame index: the daemon and a
CLI command (`frame put`, `approve`, ...) take the same lock, so their commits never
interleave.

`daemon_lock`: one daemon per home. Two `twinsync run` on one home would both commit and
both merge; the second one is refused with the first one's pid. It is a `flock` held for
the daemon's whole life, so the kernel releases it when the daemon dies, even by kill -9:
a stale pid in the file never blocks a new daemon. `restore` holds it too while it replaces
trace.db, and says so in the file, so whoever is refused meanwhile is told to wait for a
restore, not to stop a daemon that does not run.

`publish_lock`: one publish (segment, snapshot, prune, cleanup) at a time per home.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from folders.errors import HomeError, TwinsyncError

DAEMON_LOCK = "daemon.lock"
PUBLISH_LOCK = "publish.lock"
MODULES_LOCK = "modules.lock"
#: How long `running_daemon` waits for a daemon that holds the lock to write its pid.
PID_WAIT_S = 2.0
#: How long a starting daemon retries past a reader's momentary shared lock.
LOCK_RETRY_S = 0.5
#: Who holds `daemon_lock`, as written after the pid in daemon.lock.
DAEMON, RESTORE = "daemon", "restore"


class DaemonRunningError(TwinsyncError):
    """A daemon holds this home's lock, so what was asked must wait until it stops."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


@contextmanager
def frames_lock(home: Path) -> Iterator[None]:
    with _exclusive(Path(home) / "frames.lock"):
        yield


@contextmanager
def modules_lock(home: Path) -> Iterator[None]:
    """One writer at a time for modules.git and the module queue (daemon scan, CLI publish,
    approve, reject)."""
    with _exclusive(Path(home) / MODULES_LOCK):
        yield


@contextmanager
def publish_lock(home: Path) -> Iterator[None]:
    """One publish at a time: the daemon's scheduled publish and a `trace publish` would
    otherwise both snapshot, both prune and both clean the node's recovery folder."""
    with _exclusive(Path(home) / PUBLISH_LOCK):
        yield


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Wait for and hold an exclusive `flock` on `path`; the kernel drops it if we die."""
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pid_text(pid: int | None) -> str:
    return f"pid {pid}" if pid else "pid unknown"


@dataclass(frozen=True)
class Holder:
    """Who holds a home's daemon lock: the daemon, or a restore."""

    pid: int | None
    what: str = DAEMON

    def busy(self, home: Path, action: str) -> str:
        """One sentence for whoever wanted the home meanwhile, and was about to `action`."""
        if self.what == RESTORE:
            return (f"A `twinsync restore` ({_pid_text(self.pid)}) is replacing the trace of {home}; "
                    f"wait for it to finish, then {action} again.")
        return (f"The twinsync daemon ({_pid_text(self.pid)}) is running for {home}; stop `twinsync run` "
                f"first, then {action} again.")


@contextmanager
def daemon_lock(home: Path, *, holder: str = DAEMON) -> Iterator[None]:
    """Held while the daemon runs (or, `holder=RESTORE`, while a restore replaces trace.db);
    raises `DaemonRunningError` naming who holds it and their pid."""
    path = Path(home) / DAEMON_LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise HomeError(f"Cannot open {path} ({exc.strerror}); make the node home writable for this user.") from None
    try:
        if not _lock_soon(fd):
            other = _read_holder(fd)
            if holder == DAEMON and other.what == DAEMON:
                message = (f"A twinsync daemon already runs for {home} ({_pid_text(other.pid)}); use that one, "
                           f"or stop it (kill {other.pid or 'PID'}) before starting another.")
            else:
                message = other.busy(home, "start the daemon" if holder == DAEMON else holder)
            raise DaemonRunningError(message, other.pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {holder}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def lock_holder(home: Path) -> Holder | None:
    """Who holds `home`'s daemon lock now (a pid of None: it could not be read), or None."""
    path = Path(home) / DAEMON_LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def running_daemon(home: Path) -> int | None:
    """The pid of the daemon that holds `home`'s lock, None when no daemon runs (0 when one
    holds it but its pid cannot be read). A restore holding the lock is not a daemon."""
    holder = lock_holder(home)
    if holder is None or holder.what != DAEMON:
        return None
    return holder.pid or 0


def refuse_while_daemon_runs(home: Path, action: str) -> None:
    """For commands that must not run beside the daemon, or beside a restore (`restore`):
    one sentence naming who holds the home."""
    holder = lock_holder(home)
    if holder is not None:
        raise DaemonRunningError(holder.busy(home, action), holder.pid)


def _lock_soon(fd: int) -> bool:
    """`running_daemon` holds a shared lock for a moment to look: retry past it, so a status
    poll never makes a new daemon think another one runs."""
    deadline = time.monotonic() + LOCK_RETRY_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


def _read_holder(fd: int) -> Holder:
    """The holder writes "pid what" just after it takes the lock: wait a moment for it
    (a daemon of an earlier version writes the pid alone)."""
    deadline = time.monotonic() + PID_WAIT_S
    while True:
        words = os.pread(fd, 64, 0).decode(errors="replace").split()
        if words and words[0].isdigit():
            return Holder(int(words[0]), RESTORE if words[1:2] == [RESTORE] else DAEMON)
        if time.monotonic() > deadline:
            return Holder(None)
        time.sleep(0.02)
