"""SIGKILL of the daemon at many points of its heaviest work: a 2,000-frame commit, a large
merge, a publish with a snapshot; and of `twinsync restore`. After a restart nothing may be
lost or doubled: Git is sound and every frame committed once, every published step merged
once, every published step in exactly one segment.

TWINSYNC_FAULT_KILLS (default 2) kill points per kind of work."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from folders.frame import Frame
from folders.layout import NodeLayout
from folders.snapshots import SEGMENTS_DIR, SNAPSHOTS_DIR
from folders.trace import TraceDB
from orchestrator.node import Node
from tests.conftest import wait_for
from tests.faults.cluster import (configure, git, git_fsck, integrity, published_steps,
                                  trace_steps)

pytestmark = pytest.mark.faults

KILLS = int(os.environ.get("TWINSYNC_FAULT_KILLS", "2"))
FRAMES = 2000


def _kill_delays() -> list[float]:
    """KILLS points from just after the daemon starts to a few seconds into its work."""
    if KILLS == 1:
        return [0.5]
    return [0.2 + 2.8 * i / (KILLS - 1) for i in range(KILLS)]


def _kill_during(c, name: str, done, what: str, timeout: float = 120) -> None:
    """Start the daemon on pending work and SIGKILL it at each point; then let a last start
    finish the work. The work is redone from what the kills left on disk."""
    for delay in _kill_delays():
        c.start_daemon(name)
        time.sleep(delay)  # the kill point itself, not a wait for a condition
        c.kill_daemon(name)
    c.start_daemon(name)
    wait_for(done, timeout=timeout, what=what, interval=0.2)


def _commits_per_path(home: Path, prefix: str) -> Counter:
    out = git(home, "log", "--all", "--format=", "--name-only", "--", prefix).stdout
    return Counter(line for line in out.splitlines() if line.strip())


def _head_paths(home: Path, prefix: str) -> int:
    out = git(home, "ls-tree", "-r", "--name-only", "HEAD", "--", prefix).stdout
    return len([line for line in out.splitlines() if line.endswith(".frame.json")])


def _write_frames(node, namespace: str, n: int = FRAMES) -> None:
    """As if Syncthing delivered n valid frames signed by this node while the daemon was down
    (written plainly, without an fsync per file, to keep the set-up short)."""
    with Node.open(node.home) as opened:
        key = opened.signing_key()
        folder = opened.layout.frames_shared / namespace
        folder.mkdir(parents=True)
        for i in range(n):
            frame = Frame.create(f"{namespace}/f{i:05d}", node.name, {"i": i, "text": "x" * 40}, key)
            (folder / f"f{i:05d}.frame.json").write_bytes(frame.to_bytes())


@pytest.mark.timeout(240)
def test_sigkill_during_a_2000_frame_commit_commits_each_frame_once(cluster):
    c = cluster(1)
    home = c.nodes["node1"].home
    _write_frames(c.nodes["node1"], "bulk")
    _kill_during(c, "node1", lambda: _head_paths(home, "bulk") == FRAMES, "2,000 frames committed")
    counts = _commits_per_path(home, "bulk")
    twice = {p: k for p, k in counts.items() if k != 1}
    assert len(counts) == FRAMES and not twice, f"committed more than once: {list(twice)[:5]}"
    assert git_fsck(home) == ""
    assert integrity(NodeLayout(home).state_db) == "ok"
    conflicts = json.loads(c.nodes["node1"].cli("conflicts", "--json").output)
    assert conflicts == [], "a crash must not turn good frames into queue items"


def _record_many(home: Path, author: str, sessions: int, steps: int, tag: str) -> None:
    with TraceDB(home / "trace.db", author) as trace:
        for i in range(sessions):
            s = trace.start_session(f"goal {i % 20}")
            for j in range(steps):
                trace.append(s, "observation", f"{tag} step {j} of {i}")
            trace.finish(s, f"answer {i % 3}")


def _copy_recovery(src_home: Path, dst_home: Path, owner: str) -> None:
    """Deliver `owner`'s published files to another node, each .db before its manifest."""
    src = NodeLayout(src_home).recovery(owner)
    dst = NodeLayout(dst_home).recovery(owner)
    for sub in (SEGMENTS_DIR, SNAPSHOTS_DIR):
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for manifest in sorted((src / sub).glob("*.json")):
            for f in (manifest.with_suffix(".db"), manifest):
                target = dst / sub / f.name
                if f.exists() and not target.exists():
                    tmp = target.with_name(".twinsync-tmp-" + f.name)
                    tmp.write_bytes(f.read_bytes())
                    os.replace(tmp, target)


def _duplicate_steps(home: Path) -> int:
    conn = sqlite3.connect(NodeLayout(home).trace_db)
    try:
        total, distinct = conn.execute("SELECT count(*), count(DISTINCT hash) FROM steps").fetchone()
        return total - distinct
    finally:
        conn.close()


@pytest.mark.timeout(240)
def test_sigkill_during_a_large_merge_merges_every_step_once(cluster):
    c = cluster(2)
    a, b = c.nodes["node1"], c.nodes["node2"]
    for name in c.nodes:  # delivery by hand below, so Syncthing must not race it
        c.stop_syncthing(name)
    _record_many(a.home, "node1", 40, 40, "bulk")
    a.cli("trace", "publish")
    published = published_steps(a.home, "node1")
    _copy_recovery(a.home, b.home, "node1")
    _kill_during(c, "node2", lambda: published <= trace_steps(b.home), "every published step merged")
    assert _duplicate_steps(b.home) == 0
    assert integrity(NodeLayout(b.home).trace_db) == "ok"
    assert "merged node1 #" not in b.cli("trace", "merge").output, "nothing is merged twice"


def _steps_in(home: Path, owner: str, sub: str) -> list[Counter]:
    """The steps of each published file of `owner` in `sub`, one Counter per file."""
    found = []
    for manifest in sorted((NodeLayout(home).recovery(owner) / sub).glob("*.json")):
        db = manifest.with_suffix(".db")
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            found.append(Counter(r[0] for r in conn.execute("SELECT hash FROM steps")))
        finally:
            conn.close()
    return found


@pytest.mark.timeout(240)
def test_sigkill_during_publish_and_snapshot_publishes_every_step_once(cluster):
    c = cluster(1)
    node = c.nodes["node1"]
    configure(node, snapshot_every_segments=1)
    _record_many(node.home, "node1", 40, 40, "bulk")
    own = NodeLayout(node.home).recovery("node1")
    # Done when all is published and the daemon's publish after the last kill (it publishes
    # as it starts) removed what that kill left half written.
    _kill_during(c, "node1", lambda: not _unpublished(node.home) and not _orphans(own),
                 "every finished session published, no .db without its manifest")
    c.kill_daemon("node1")
    segments = _steps_in(node.home, "node1", SEGMENTS_DIR)
    in_segments = sum(segments, Counter())
    twice = [h for h, k in in_segments.items() if k > 1]
    assert not twice, f"{len(twice)} step(s) in more than one segment"
    newest_snapshot = (_steps_in(node.home, "node1", SNAPSHOTS_DIR) or [Counter()])[-1]
    missing = published_steps(node.home, "node1") - set(in_segments) - set(newest_snapshot)
    assert not missing, f"{len(missing)} published step(s) in no segment and not in the newest snapshot"
    orphans = _orphans(own)
    assert not orphans, f"a killed publish left files without a manifest for peers to receive: {orphans}"
    verdicts = json.loads(node.cli("snapshots", "--verify", "--json").output)
    assert verdicts and all(v["verified"] == "ok" for v in verdicts), verdicts
    assert integrity(NodeLayout(node.home).trace_db) == "ok"


def _orphans(own: Path) -> list[str]:
    """Files of this node's folder a peer would receive without their manifest."""
    return [p.name for p in own.rglob("*.db") if not p.with_suffix(".json").exists()]


def _unpublished(home: Path) -> int:
    conn = sqlite3.connect(NodeLayout(home).trace_db)
    try:
        return conn.execute("SELECT count(*) FROM sessions WHERE status = 'finished'").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.timeout(240)
def test_sigkill_during_restore_leaves_a_trace_that_restores_again(cluster):
    c = cluster(1)
    node = c.nodes["node1"]
    _record_many(node.home, "node1", 60, 20, "restore")
    node.cli("trace", "publish")
    published = published_steps(node.home, "node1")
    twinsync = str(Path(sys.executable).with_name("twinsync"))
    started = time.monotonic()
    subprocess.run([twinsync, "restore", "--latest", "--yes", "--home", str(node.home)], check=True,
                   capture_output=True)
    undisturbed = time.monotonic() - started
    for delay in [undisturbed * (i + 0.5) / KILLS for i in range(KILLS)]:
        proc = subprocess.Popen([twinsync, "restore", "--latest", "--yes", "--home", str(node.home)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        trace_db = NodeLayout(node.home).trace_db
        assert trace_db.exists(), f"a kill at {delay:.2f} s left no trace.db"
        assert integrity(trace_db) == "ok"
        node.cli("restore", "--latest", "--yes")
        assert published_steps(node.home, "node1") == published


ROUNDS = 8


@pytest.mark.timeout(240)
def test_two_publishes_at_once_both_succeed_and_clean_what_a_killed_one_left(cluster):
    """Finding E: a `trace publish` racing another publish (the daemon's) failed with "Cannot
    prune … No such file or directory". Two processes publish at once, round after round,
    each snapshotting and pruning; both must exit 0 with distinct seqs. Finding C: what a
    killed publish left in the node's own folder (a temporary, a .db without its manifest)
    is removed by the next publish."""
    c = cluster(1)
    node = c.nodes["node1"]
    c.stop_syncthing("node1")
    configure(node, snapshot_every_segments=1, keep_snapshots=1)
    own = NodeLayout(node.home).recovery("node1")
    _record_many(node.home, "node1", 2, 2, "first")
    node.cli("trace", "publish")
    stale = time.time() - 3600
    planted = [own / SNAPSHOTS_DIR / "snap-20000101T000000000000Z.db",
               own / SEGMENTS_DIR / ".twinsync-tmp-0badcafe-seg-00000099-00000099.db"]
    for path in planted:
        path.write_bytes(b"left by a publish killed mid-way")
        os.utime(path, (stale, stale))
    twinsync = str(Path(sys.executable).with_name("twinsync"))
    failures = []
    for i in range(ROUNDS):
        _record_many(node.home, "node1", 3, 2, f"round {i}")
        procs = [subprocess.Popen([twinsync, "trace", "publish", "--home", str(node.home)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(2)]
        for proc in procs:
            output, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                failures.append(f"round {i}: exit {proc.returncode}: {output.strip()[:200]}")
    assert not failures, "\n".join(failures)
    assert not [p.name for p in planted if p.exists()], "the next publish left a killed publish's files"
    seqs = [json.loads(m.read_text())["seq"] for m in (own / SEGMENTS_DIR).glob("seg-*.json")]
    assert len(seqs) == len(set(seqs)), f"two segments share a seq: {sorted(seqs)}"
    in_segments = sum(_steps_in(node.home, "node1", SEGMENTS_DIR), Counter())
    assert not [h for h, k in in_segments.items() if k > 1], "a step is in more than one segment"
    assert _unpublished(node.home) == 0
    assert not _orphans(own) and not list(own.rglob(".twinsync-tmp-*")), _orphans(own)
    verdicts = json.loads(node.cli("snapshots", "--verify", "--json").output)
    assert verdicts and all(v["verified"] == "ok" for v in verdicts), verdicts
