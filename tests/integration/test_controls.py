"""The controls on real Syncthings: pause and resume a peer or a folder, rescan, the
per-peer rates and out-of-sync counts of `nodes`, and unpair on both sides, with what the
other side sees (`twinsync watch` prints the peer-disconnected alert, Ctrl-C exits 0)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from folders.trace import utc_now
from orchestrator.alerts import watch
from orchestrator.node import Node
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


def _traffic(node, peer: str) -> dict:
    rows = json.loads(node.cli("nodes", "--json").output)
    return next(r["traffic"] for r in rows if r["name"] == peer)


def _connected(node, peer: str) -> bool:
    peers = json.loads(node.cli("peers", "--json", ok=False).output)
    return any(p["name"] == peer and p["connected"] for p in peers)


def test_pause_resume_rescan_and_the_rates_and_out_of_sync_columns(mesh, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the whole `nodes` table on one line per node
    a, b = mesh(2)
    wait_for(lambda: _connected(a, "node2"), timeout=60, what="node1 and node2 connected")
    b_id = json.loads(a.cli("peers", "--json").output)[0]["device_id"]

    assert a.cli("pause", "node2").output.strip().startswith("Peer node2 paused")
    assert a.client().device(b_id)["paused"] is True
    assert _traffic(a, "node2")["paused"] is True
    row = next(line for line in a.cli("nodes").output.splitlines() if line.startswith("│ node2"))
    assert "│ paused " in row
    assert a.cli("resume", b_id[:7]).output.strip().startswith("Peer node2 resumed")  # a device ID works too
    assert a.client().device(b_id)["paused"] is False

    wrong = a.cli("pause", "nobody", ok=False)
    assert wrong.exit_code == 1
    assert wrong.output.strip() == "Error: No trusted peer is called 'nobody'; name one of: node2."
    assert a.cli("pause", ok=False).exit_code == 1
    assert "no folder 'photos'" in a.cli("rescan", "--folder", "photos", ok=False).output

    b.cli("pause", "--folder", "frames")
    assert b.client().folder("twinsync-frames")["paused"] is True
    assert b.cli("rescan").output.strip() == "Syncthing is scanning twinsync-modules, twinsync-recovery-node1, twinsync-recovery-node2."
    b.cli("resume", "--folder", "twinsync-frames")
    assert b.client().folder("twinsync-frames")["paused"] is False

    # node2 holds a frame, then is paused here: what node1 writes next is out of sync there.
    # "Holds" as node1 knows it: node2's index must have reached node1 before the pause (a
    # file on node2's disk is not yet an index sent); until then node1 counts from no index
    # at all and the count below is not node2's.
    a.cli("frame", "put", "notes/n0", "--body", "{}")
    wait_for(lambda: (b.home / "frames.shared/notes/n0.frame.json").exists(), timeout=60, what="n0 on node2")
    wait_for(lambda: _traffic(a, "node2")["need_items"] == 0, timeout=60, what="node1 to hear node2 holds n0")
    a.cli("pause", "node2")
    for i in range(1, 4):
        a.cli("frame", "put", f"notes/n{i}", "--body", json.dumps({"i": i}))
    assert a.cli("rescan", "--folder", "frames").output.strip() == "Syncthing is scanning twinsync-frames."
    wait_for(lambda: _traffic(a, "node2")["need_items"] == 3, timeout=60, what="node2 behind by three frames")
    a.cli("resume", "node2")
    wait_for(lambda: _traffic(a, "node2")["need_items"] == 0, timeout=60, what="node2 caught up")
    traffic = _traffic(a, "node2")
    assert traffic["connected"] is True and traffic["in_bps"] >= 0 and traffic["out_bps"] >= 0
    assert (b.home / "frames.shared/notes/n3.frame.json").exists()


def _watch(node, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / f"watch-{node.name}.jsonl"
    proc = subprocess.Popen([str(Path(sys.executable).with_name("twinsync")), "watch", "--json",
                             "--interval", "0.3", "--home", str(node.home)],
                            stdout=open(out, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc, out


def _alerts(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_unpair_on_both_sides_and_what_the_other_side_sees(mesh, tmp_path):
    a, b = mesh(2)
    config = b.home / "twinsync.toml"
    config.write_text(config.read_text().replace("peer_disconnected_after_s = 600", "peer_disconnected_after_s = 1"))
    wait_for(lambda: _connected(a, "node2") and _connected(b, "node1"), timeout=60, what="connected")
    a.cli("trace", "publish")  # node1's recovery folder has files on node2
    wait_for(lambda: (b.home / "trace/recovery/node1/fingerprint.json").exists(), timeout=60, what="arrival")
    b_id = json.loads(a.cli("peers", "--json").output)[0]["device_id"]

    proc, out = _watch(b, tmp_path)
    try:
        wait_for(lambda: any(x["kind"] == "daemon" for x in _alerts(out)), timeout=30,
                 what="watch says the daemon is not running")

        refused = a.cli("unpair", "node2", ok=False)
        assert refused.exit_code == 1 and "pass --yes" in refused.output  # no terminal: not done
        assert "node2" in json.loads(a.cli("peers", "--json").output)[0]["name"]

        report = json.loads(a.cli("unpair", "node2", "--yes", "--json").output)
        assert report["device_removed"] and report["recovery"] == "kept"
        assert sorted(report["folders_unshared"]) == ["twinsync-frames", "twinsync-modules",
                                                      "twinsync-recovery-node1", "twinsync-recovery-node2"]
        client = a.client()
        assert client.device(b_id) is None
        assert client.folder("twinsync-recovery-node2") is None
        assert all(d["deviceID"] != b_id for f in client.folders() for d in f["devices"])
        assert json.loads(a.cli("peers", "--json").output) == []
        assert not (a.home / "trace/recovery/node2").exists()
        assert (a.home / "unpaired/node2").is_dir()
        assert a.cli("doctor", ok=False).exit_code in (0, 1)

        # the other side: node1 vanished; watch raises the peer-disconnected alert
        alert = wait_for(lambda: next((x for x in _alerts(out) if x["kind"] == "peer-disconnected"), None),
                         timeout=60, what="node2's watch sees node1 disconnected")
        assert alert["subject"] == "node1" and alert["state"] == "raised"
        assert "Peer node1 has been disconnected" in alert["sentence"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in out.read_text() and "Aborted" not in out.read_text()
    assert sum(1 for x in _alerts(out) if x["kind"] == "peer-disconnected") == 1  # once, not every look

    text = b.cli("unpair", "node1", "--remove-recovery", "--yes").output
    assert "Its recovery folder" in text and "is removed" in text and "twinsync unpair node2" in text
    assert not (b.home / "trace/recovery/node1").exists() and not (b.home / "unpaired").exists()
    assert b.client().folder("twinsync-recovery-node1") is None


def test_watch_names_a_failing_look_once_and_goes_on_and_a_bad_alerts_setting_is_one_sentence(node_factory):
    node = node_factory("solo")
    trusted = node.home / "trusted.toml"
    good = trusted.read_bytes() if trusted.exists() else b""
    trusted.write_text("[peers.x\n")
    seen: list[tuple[str, str]] = []
    problems: list[str] = []
    stop = threading.Event()
    looks = []

    def clock():
        looks.append(1)
        if len(looks) == 4:
            trusted.write_bytes(good)  # fixed while watch runs
        if len(looks) == 6:
            stop.set()
        return utc_now()

    with Node.open(node.home) as opened:
        watch(opened, lambda state, alert: seen.append((state, alert.kind)), stop, interval_s=0.01,
              on_problem=problems.append, clock=clock)
    assert len(problems) == 1 and str(trusted) in problems[0]  # said once, not at every look
    assert seen == [("raised", "daemon")]  # the looks after the fix work

    config = node.home / "twinsync.toml"
    config.write_text(config.read_text().replace("desktop = true", 'desktop = "yes"'))
    result = node.cli("watch", ok=False)
    assert result.exit_code == 1
    assert result.output.strip() == f'Error: alerts.desktop in {config} must be true or false, not \'yes\'.'
