"""The managed `syncthing serve`, on whichever Syncthing $TWINSYNC_SYNCTHING names (CI runs
bookworm's 1.19.2 and trixie's 1.29.5): its log rotates, a user's own Syncthing settings in
the environment do not leak into it, and a stuck one is killed with everything under it."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from syncthing.process import ManagedSyncthing, binary_version, free_port
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


def test_the_log_is_rotated_by_size_and_old_files_are_capped(tmp_path):
    st = ManagedSyncthing(tmp_path / "st", log_max_bytes=600, log_max_old_files=1)
    st.generate("a")
    st.start()
    try:
        # Syncthing's startup lines alone pass 600 bytes.
        wait_for(lambda: (st.home / "syncthing.0.log").exists(), what="the first rotation")
        logs = {p.name for p in st.home.glob("*.log")}
        assert "syncthing.0.log" in logs and logs <= {"syncthing.0.log", "syncthing.log"}, logs
    finally:
        st.stop()


def test_the_users_own_syncthing_settings_do_not_reach_the_managed_one(tmp_path, monkeypatch):
    """STCONFDIR made 1.27+ refuse `generate --home`; STGUIADDRESS moved the GUI away from
    the port twinsync wrote, so the start never saw it answer."""
    users = tmp_path / "users-syncthing"
    monkeypatch.setenv("STCONFDIR", str(users))
    monkeypatch.setenv("STGUIADDRESS", f"127.0.0.1:{free_port()}")
    st = ManagedSyncthing(tmp_path / "st")
    st.generate("a")
    st.start(timeout=20)
    try:
        with st.client() as client:
            assert client.ping()
    finally:
        st.stop()
    assert not users.exists()


def test_a_stuck_syncthing_is_killed_with_its_monitor(tmp_path):
    st = ManagedSyncthing(tmp_path / "st")
    st.generate("a")
    pid = st.start()
    group = [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    assert len(group) == 2, "Syncthing runs under its monitor, which rotates the log"
    os.kill(pid, signal.SIGSTOP)  # the monitor can no longer pass SIGTERM on
    st.stop(grace=0.5)
    wait_for(lambda: not any(_alive(p) for p in group), timeout=10, what="the whole group to die")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_version_is_read_from_the_program_in_use():
    version = binary_version()
    expected = os.environ.get("TWINSYNC_SYNCTHING_VERSION")
    if expected:
        assert str(version) == expected
    assert version.major >= 1
