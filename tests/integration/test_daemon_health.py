"""The supervised daemon on real processes: Syncthing killed (SIGKILL) under a running
`twinsync run` and started again on the same ports leaves the daemon fully working (events
and early merges resume, health goes degraded and back) without restarting it; one daemon
per home; kill -9 of the daemon releases the lock; the heartbeat goes stalled when it is
not refreshed and not running when the daemon is gone."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from folders.trace import parse_ts
from orchestrator.heartbeat import (DEGRADED, HEARTBEAT_INTERVAL_S, NOT_RUNNING, RUNNING, STALE_AFTER_S, STALLED,
                                    load_heartbeat, read_health)
from orchestrator.lock import running_daemon
from tests.conftest import stays_false, wait_for

pytestmark = pytest.mark.integration


def _steps(home: Path) -> set[str]:
    conn = sqlite3.connect(home / "trace.db")
    try:
        return {r[0] for r in conn.execute("SELECT hash FROM steps")}
    finally:
        conn.close()




def test_syncthing_killed_and_started_again_under_a_running_daemon(mesh, daemon_factory):
    a, b = mesh(2)
    config = a.home / "twinsync.toml"  # merges only when a peer's file arrives, never by the clock
    config.write_text(config.read_text().replace("merge_interval_s = 10", "merge_interval_s = 3600"))
    daemon = daemon_factory(a)
    wait_for(lambda: read_health(a.home).state == RUNNING, timeout=30, what="the daemon running")
    # subscribed (it reports the peers' connections then): a long-poll is now in flight
    wait_for(lambda: "peer node2" in daemon.log(), timeout=30, what="the event stream subscribed")

    a.syncthing.kill()
    health = wait_for(lambda: (h := read_health(a.home)).state == DEGRADED and h, timeout=30,
                      what="health degraded")
    assert "syncthing-events is degraded: no events from Syncthing (" in health.message
    assert json.loads(a.cli("status", "--json", ok=False).output)["daemon"]["state"] == DEGRADED

    a.syncthing.start()  # the same config: the same API and listen ports
    wait_for(lambda: read_health(a.home).state == RUNNING, timeout=60, what="health back to running")
    assert daemon.proc.poll() is None

    session = b.cli("trace", "start", "plan the week").output.strip()
    b.cli("trace", "add", session, "observation", "Tuesday is free")
    b.cli("trace", "finish", session, "gym on Tuesday")
    b.cli("trace", "publish")
    wanted = _steps(b.home)
    wait_for(lambda: wanted <= _steps(a.home), timeout=90, what="B's segment merged early on A")

    mark = len(daemon.log())  # live peer status comes only from Syncthing's event stream
    b.syncthing.stop()
    wait_for(lambda: "peer node2 disconnected" in daemon.log()[mark:], timeout=30, what="node2 disconnected")
    mark = len(daemon.log())
    b.syncthing.start()
    wait_for(lambda: "peer node2 connected" in daemon.log()[mark:], timeout=60, what="node2 connected")

    log = daemon.log()
    assert "Syncthing events unavailable" in log and "Syncthing events resumed" in log
    assert "Traceback" not in log
    assert daemon.proc.poll() is None and read_health(a.home).state == RUNNING


def test_one_daemon_per_home_and_a_killed_daemon_leaves_no_lock_behind(node_factory, daemon_factory):
    a = node_factory("node1")
    first = daemon_factory(a)
    pid = first.proc.pid
    assert running_daemon(a.home) == pid

    second = subprocess.run([str(Path(sys.executable).with_name("twinsync")), "run", "--home", str(a.home)],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert second.stderr.strip() == (f"Error: A twinsync daemon already runs for {a.home} (pid {pid}); use that "
                                     f"one, or stop it (kill {pid}) before starting another."), second.stderr
    status = json.loads(a.cli("status", "--json").output)["daemon"]
    assert (status["state"], status["pid"]) == (RUNNING, pid)
    daemon_check = [c for c in json.loads(a.cli("doctor", "--json", ok=False).output) if c["name"] == "daemon"]
    assert daemon_check[0]["level"] == "ok"

    # Frozen: the pid is alive and holds the lock, the heartbeat stops being refreshed.
    os.kill(pid, signal.SIGSTOP)
    try:
        beat = load_heartbeat(a.home)
        stays_false(lambda: load_heartbeat(a.home).written != beat.written, HEARTBEAT_INTERVAL_S + 1)
        later = parse_ts(beat.written) + timedelta(seconds=STALE_AFTER_S + 1)
        stalled = read_health(a.home, now=later)
        assert stalled.state == STALLED and f"The daemon (pid {pid}) has not refreshed its heartbeat" in stalled.message
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: load_heartbeat(a.home).written != beat.written, timeout=30, what="the heartbeat refreshed")
    assert read_health(a.home).state == RUNNING

    os.kill(pid, signal.SIGKILL)
    first.proc.wait(10)
    gone = read_health(a.home)
    assert gone.state == NOT_RUNNING and running_daemon(a.home) is None
    assert gone.message.startswith("No twinsync daemon runs for this node (its last heartbeat was at ")
    assert "daemon     not running" in a.cli("status").output

    again = daemon_factory(a)  # the kernel released the lock with the killed process
    assert running_daemon(a.home) == again.proc.pid
    wait_for(lambda: read_health(a.home).state == RUNNING, timeout=30, what="the new daemon running")


def test_nodes_shows_this_nodes_daemon(node_factory, daemon_factory):
    a = node_factory("node1")
    a.cli("trace", "publish")  # a fingerprint, so node1 has a row

    def own_row() -> dict:
        return next(r for r in json.loads(a.cli("nodes", "--json").output) if r["name"] == "node1")

    assert own_row()["daemon"]["state"] == NOT_RUNNING
    assert "node1: daemon not running: No twinsync daemon runs" in a.cli("nodes").output
    daemon = daemon_factory(a)
    wait_for(lambda: own_row()["daemon"]["state"] == RUNNING, timeout=30, what="nodes showing the daemon")
    assert own_row()["daemon"]["pid"] == daemon.proc.pid
