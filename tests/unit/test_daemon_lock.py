"""One daemon per home: the lock names its holder, a stale pid never blocks, and a reader
polling the lock (status, the TUI) never makes a starting daemon think another one runs."""

from __future__ import annotations

import fcntl
import os
import threading

import pytest

from orchestrator.lock import (DAEMON_LOCK, RESTORE, DaemonRunningError, Holder, daemon_lock, lock_holder,
                               refuse_while_daemon_runs, running_daemon)


def test_the_lock_names_its_holder_and_is_free_again_after(tmp_path):
    assert running_daemon(tmp_path) is None
    with daemon_lock(tmp_path):
        assert running_daemon(tmp_path) == os.getpid()
        with pytest.raises(DaemonRunningError) as caught, daemon_lock(tmp_path):
            pass
        assert caught.value.pid == os.getpid()
        assert str(caught.value) == (f"A twinsync daemon already runs for {tmp_path} (pid {os.getpid()}); use "
                                     f"that one, or stop it (kill {os.getpid()}) before starting another.")
        with pytest.raises(DaemonRunningError, match=rf"\(pid {os.getpid()}\) is running for .*; stop `twinsync "
                                                     r"run` first, then restore again\."):
            refuse_while_daemon_runs(tmp_path, "restore")
    assert running_daemon(tmp_path) is None
    refuse_while_daemon_runs(tmp_path, "restore")


def test_a_restore_holding_the_lock_is_named_as_a_restore_not_a_daemon(tmp_path):
    """Two restores at once: the loser was told to stop a daemon that did not run."""
    with daemon_lock(tmp_path, holder=RESTORE):
        assert lock_holder(tmp_path) == Holder(os.getpid(), RESTORE)
        assert running_daemon(tmp_path) is None  # status: no daemon runs
        wait = (f"A `twinsync restore` (pid {os.getpid()}) is replacing the trace of {tmp_path}; wait for it "
                "to finish, then {} again.")
        with pytest.raises(DaemonRunningError) as caught:
            refuse_while_daemon_runs(tmp_path, "restore")
        assert str(caught.value) == wait.format("restore")
        for holder, action in ((RESTORE, "restore"), ("daemon", "start the daemon")):
            with pytest.raises(DaemonRunningError) as caught, daemon_lock(tmp_path, holder=holder):
                pass
            assert str(caught.value) == wait.format(action) and caught.value.pid == os.getpid()
    with daemon_lock(tmp_path):
        with pytest.raises(DaemonRunningError, match=r"daemon \(pid \d+\) is running .* then restore again"):
            daemon_lock(tmp_path, holder=RESTORE).__enter__()
    assert lock_holder(tmp_path) is None


def test_a_lock_file_of_an_earlier_version_names_a_daemon(tmp_path):
    (tmp_path / DAEMON_LOCK).write_text(f"{os.getpid()}\n")
    fd = os.open(tmp_path / DAEMON_LOCK, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert lock_holder(tmp_path) == Holder(os.getpid(), "daemon")  # the flock is per open file
    finally:
        os.close(fd)


def test_a_stale_pid_in_the_lock_file_blocks_nothing(tmp_path):
    (tmp_path / DAEMON_LOCK).write_text("999999\n")  # left by a daemon killed with -9
    assert running_daemon(tmp_path) is None
    with daemon_lock(tmp_path):
        assert running_daemon(tmp_path) == os.getpid()


def test_readers_polling_the_lock_never_make_a_start_fail(tmp_path):
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            running_daemon(tmp_path)

    readers = [threading.Thread(target=poll) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for _ in range(200):
            with daemon_lock(tmp_path):
                pass
    finally:
        stop.set()
        for t in readers:
            t.join()
