"""A cluster of real nodes to break on purpose: each node is a home made by `twinsync init`
against its own loopback Syncthing (the `node_factory` fixture) with a real `twinsync run`
daemon (`DaemonProcess`). The faults are the ones a home network sees: a process killed with
SIGKILL, a peer unreachable (devices paused through Syncthing's REST API on both sides),
and files arriving in any order (a peer's segments and snapshots copied in shuffled order
while the node's Syncthing is stopped). The checks read only what is on disk."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import psutil

from folders.files import write_atomic
from folders.layout import NodeLayout
from folders.snapshots import SEGMENTS_DIR, SNAPSHOTS_DIR
from orchestrator.config import load_config, save_config
from syncthing.errors import SyncthingError
from tests.conftest import DaemonProcess, TestNode, pair_mesh, wait_for

#: Fast trace jobs so a short run publishes, snapshots and merges many times.
FAST_TRACES = {"publish_interval_s": 3, "merge_interval_s": 2, "snapshot_every_segments": 3,
               "snapshot_every_minutes": 1}


def configure(node: TestNode, **traces: int) -> None:
    layout = NodeLayout(node.home)
    config = load_config(layout)
    save_config(layout, replace(config, traces=replace(config.traces, **traces)))


class Cluster:
    """Owns the daemons it starts; the Syncthings belong to `syncthing_factory`, which stops
    them at teardown whatever state a test left them in."""

    def __init__(self, nodes: list[TestNode], logs: Path) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.logs = logs
        self.daemons: dict[str, DaemonProcess | None] = {n.name: None for n in nodes}
        self.all_daemons: list[DaemonProcess] = []
        self.device = {n.name: load_config(NodeLayout(n.home)).device_id for n in nodes}
        self.syncthing_down: set[str] = set()
        self.paused: set[frozenset[str]] = set()
        self.faults: Counter[str] = Counter()

    # -- daemons -------------------------------------------------------------------------

    def start_daemon(self, name: str) -> DaemonProcess:
        assert self.daemons[name] is None or self.daemons[name].proc.poll() is not None
        daemon = DaemonProcess(self.nodes[name].home, self.logs / f"daemon-{name}-{len(self.all_daemons)}.log")
        self.all_daemons.append(daemon)
        self.daemons[name] = daemon
        daemon.wait_started()
        return daemon

    def daemon_alive(self, name: str) -> bool:
        daemon = self.daemons[name]
        return daemon is not None and daemon.proc.poll() is None

    def kill_daemon(self, name: str) -> None:
        """SIGKILL: no finally block, no atexit, no flush."""
        daemon = self.daemons[name]
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait()
        self.daemons[name] = None
        self.faults["kill_daemon"] += 1

    def stop_all(self) -> dict[str, int]:
        """SIGTERM every daemon still running; returns exit codes by log name."""
        return {d.log_path.name: d.stop() for d in self.all_daemons}

    def daemon_logs(self) -> str:
        return "\n".join(d.log() for d in self.all_daemons)

    # -- Syncthing ---------------------------------------------------------------------

    def kill_syncthing(self, name: str) -> None:
        self.nodes[name].syncthing.kill()  # returns once Syncthing itself is gone
        self.syncthing_down.add(name)
        self.faults["kill_syncthing"] += 1

    def start_syncthing(self, name: str) -> None:
        self.nodes[name].syncthing.start()
        self.syncthing_down.discard(name)

    def stop_syncthing(self, name: str) -> None:
        self.nodes[name].syncthing.stop()
        self.syncthing_down.add(name)

    # -- partitions ----------------------------------------------------------------------

    def _pause(self, a: str, b: str, paused: bool) -> None:
        for me, other in ((a, b), (b, a)):
            with self.nodes[me].client() as client:
                client.patch_device(self.device[other], {"paused": paused})

    def partition(self, a: str, b: str) -> None:
        self._pause(a, b, True)
        self.paused.add(frozenset((a, b)))
        self.faults["partition"] += 1

    def heal(self, a: str, b: str) -> None:
        self._pause(a, b, False)
        self.paused.discard(frozenset((a, b)))

    def connected(self) -> bool:
        """Every Syncthing up and connected to every other."""
        for name, node in self.nodes.items():
            try:
                with node.client() as client:
                    connections = client.connections()
            except SyncthingError:
                return False
            if not all(connections.get(self.device[o], {}).get("connected")
                       for o in self.nodes if o != name):
                return False
        return True

    def heal_all(self, timeout: float = 60) -> None:
        """Every Syncthing and daemon running, every pause lifted, every pair connected, all
        within `timeout`. It trusts no bookkeeping of what the run broke: a Syncthing that
        does not answer (whatever stopped it) is started again, and every device is
        unpaused on every node, so a pause half applied (one side down at the time) is
        lifted too."""
        deadline = time.monotonic() + timeout
        for name in self.nodes:
            self._answering(name)
        wait_for(self._unpause_all, timeout=max(5.0, deadline - time.monotonic()),
                 what="every device unpaused on every node", interval=0.5)
        self.paused.clear()
        for name in self.nodes:
            if not self.daemon_alive(name):
                self.start_daemon(name)
        wait_for(self.connected, timeout=max(5.0, deadline - time.monotonic()),
                 what="every node connected again", interval=0.3)

    def _answering(self, name: str) -> None:
        """Make `name`'s Syncthing answer: start it again when it does not."""
        try:
            with self.nodes[name].client() as client:
                if client.ping():
                    self.syncthing_down.discard(name)
                    return
        except SyncthingError:
            pass
        self.nodes[name].syncthing.stop()
        self.start_syncthing(name)

    def _unpause_all(self) -> bool:
        for me in self.nodes:
            try:
                with self.nodes[me].client() as client:
                    for other in self.nodes:
                        if other != me:
                            client.patch_device(self.device[other], {"paused": False})
            except SyncthingError:
                self._answering(me)
                return False
        return True

    # -- out-of-order delivery ---------------------------------------------------------

    def deliver_out_of_order(self, target: str, owner: str, rng: random.Random) -> list[str]:
        """With `target`'s Syncthing stopped, copy `owner`'s segments and snapshots into
        `target`'s recovery folder one pair at a time in shuffled order (each .db before its
        manifest, as Syncthing may also do), merging on `target` after each pair so a later
        sequence number is seen before an earlier one. Returns the order used."""
        was_up = target not in self.syncthing_down
        if was_up:
            self.stop_syncthing(target)
        source = NodeLayout(self.nodes[owner].home).recovery(owner)
        dest = NodeLayout(self.nodes[target].home).recovery(owner)
        pairs = []
        for sub in (SEGMENTS_DIR, SNAPSHOTS_DIR):
            for manifest in sorted((source / sub).glob("*.json")):
                db = manifest.with_suffix(".db")
                out = dest / sub / manifest.name
                if db.exists() and not out.exists():
                    pairs.append((sub, manifest, db))
        rng.shuffle(pairs)
        order = []
        for sub, manifest, db in pairs:
            try:
                data_db, data_manifest = db.read_bytes(), manifest.read_bytes()
            except FileNotFoundError:  # pruned by its owner meanwhile
                continue
            (dest / sub).mkdir(parents=True, exist_ok=True)
            write_atomic(dest / sub / db.name, data_db)
            write_atomic(dest / sub / manifest.name, data_manifest)
            order.append(manifest.name)
            self.nodes[target].cli("trace", "merge", ok=False)
        if was_up:
            self.start_syncthing(target)
        self.faults["out_of_order"] += 1
        return order


def make_cluster(node_factory, tmp_path: Path, n: int = 3, **traces: int) -> Cluster:
    nodes = [node_factory(f"node{i}") for i in range(1, n + 1)]
    for node in nodes:
        configure(node, **{**FAST_TRACES, **traces})
    pair_mesh(nodes)
    cluster = Cluster(nodes, tmp_path)
    wait_for(cluster.connected, timeout=60, what="the mesh to connect", interval=0.3)
    return cluster


# -- what is on disk ---------------------------------------------------------------------


def frame_files(home: Path) -> dict[str, bytes]:
    """Every frame file in frames.shared/ (conflict copies and temp files are not frames)."""
    root = NodeLayout(home).frames_shared
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.frame.json"))
            if p.is_file() and ".sync-conflict-" not in p.name and not p.name.startswith(".")}


def git(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "--git-dir", str(NodeLayout(home).frames_git), *args],
                          capture_output=True, text=True)


def git_frame_hashes(home: Path) -> set[str]:
    """The `hash` of every frame version in any blob reachable in frames.git."""
    listing = git(home, "rev-list", "--all", "--objects").stdout.split("\n")
    blobs = [line.split(" ", 1)[0] for line in listing if line.endswith(".frame.json")]
    if not blobs:
        return set()
    done = subprocess.run(["git", "--git-dir", str(NodeLayout(home).frames_git), "cat-file", "--batch"],
                          input="\n".join(blobs) + "\n", capture_output=True, text=True)
    hashes = set()
    for chunk in done.stdout.split("\n"):
        if '"hash"' in chunk:
            try:
                hashes.add(json.loads(chunk)["hash"])
            except (ValueError, KeyError, TypeError):
                pass
    return hashes


def git_fsck(home: Path) -> str:
    """'' when clean, else what fsck said."""
    done = git(home, "fsck", "--no-progress", "--no-dangling")
    return "" if done.returncode == 0 and not done.stdout.strip() else (done.stdout + done.stderr).strip()


def trace_steps(home: Path) -> set[str]:
    conn = sqlite3.connect(NodeLayout(home).trace_db)
    try:
        return {r[0] for r in conn.execute("SELECT hash FROM steps")}
    finally:
        conn.close()


def published_steps(home: Path, author: str) -> set[str]:
    """This node's own steps in sessions it has published."""
    conn = sqlite3.connect(NodeLayout(home).trace_db)
    try:
        return {r[0] for r in conn.execute(
            "SELECT hash FROM steps WHERE author = ? AND session IN "
            "(SELECT session FROM sessions WHERE status = 'published')", [author])}
    finally:
        conn.close()


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def leaked_children() -> list[str]:
    """Live child processes of this test process (zombies are already dead)."""
    return [" ".join(p.cmdline()[:3]) for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
