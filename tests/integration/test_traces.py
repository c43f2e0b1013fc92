"""Traces across real Syncthing nodes: publish, merge, consensus, forks and decisions,
refusals, a crash mid-merge, and restores (DESIGN §3 flows 3-6)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from folders.meaning import Profile, rank_peers
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

GOAL = "plan the week"


def _record(node, goal: str, conclusion: str, *steps: str) -> str:
    session = node.cli("trace", "start", goal).output.strip()
    for text in steps:
        node.cli("trace", "add", session, "observation", text)
    node.cli("trace", "finish", session, conclusion)
    return session


def _query(node, goal: str = GOAL) -> dict:
    return json.loads(node.cli("trace", "query", goal, "--json").output)


def _steps(node) -> set[str]:
    conn = sqlite3.connect(node.home / "trace.db")
    try:
        return {r[0] for r in conn.execute(
            "SELECT hash FROM steps WHERE session NOT IN (SELECT session FROM sessions WHERE status != 'published')")}
    finally:
        conn.close()


def _forks(node) -> list[dict]:
    return json.loads(node.cli("forks", "--json").output)


def test_three_nodes_publish_merge_and_agree(mesh, daemon_factory):
    nodes = mesh(3)
    for node in nodes:
        daemon_factory(node)
    a, b, c = nodes
    _record(a, GOAL, "gym on Tuesday", "Monday is full")
    _record(b, GOAL, "gym on Tuesday", "Tuesday is free")
    _record(c, GOAL, "gym on Wednesday", "Wednesday is quiet")
    _record(c, "pick a book", "Dune")
    for node in nodes:
        node.cli("trace", "publish")

    everything = set().union(*(_steps(n) for n in nodes))
    assert len(everything) == 3 * 3 + 2
    for node in nodes:
        wait_for(lambda: _steps(node) == everything, timeout=40, what=f"every published step on {node.name}")
    answers = [_query(n)["consensus"] for n in nodes]
    assert all(x == answers[0] for x in answers)
    assert (answers[0]["conclusion"], answers[0]["supporters"], answers[0]["routes"]) == ("gym on Tuesday", 2, 3)

    for node in nodes:
        node.cli("trace", "publish")  # refreshes the fingerprint with everything merged
    for node in nodes:
        wait_for(lambda: len(json.loads(node.cli("nodes", "--json").output)) == 3, timeout=30,
                 what=f"three fingerprints on {node.name}")
    rows = {r["name"]: r for r in json.loads(a.cli("nodes", "--json").output)}
    assert all(r["ok"] and r["frames_agree"] for r in rows.values())
    own = {name: {k: v for k, v in r["fingerprint"]["metrics"].items() if k != "access_p95_ms"}
           for name, r in rows.items()}
    # each node computed these on its own copy: 3 of 4 concluded sessions agree, 2 goals, 4 routes
    assert all(m == own["node1"] for m in own.values()), own
    assert own["node1"]["convergence"] == pytest.approx(3 / 4)
    assert own["node1"]["routes_per_goal"] == pytest.approx(2.0)
    # Each signed fingerprint carries its node's profile: only node3 reasoned about books.
    profiles = {name: Profile.from_dict(r["fingerprint"]["profile"]) for name, r in rows.items()}
    assert rank_peers("which book should I pick next?", profiles)[0][0] == "node3"


def test_a_restored_node_that_goes_on_forks_and_one_decision_reaches_all(mesh, daemon_factory):
    a, b, c = mesh(3)
    session = _record(a, GOAL, "gym on Tuesday", "Monday is full")
    a.cli("trace", "publish")  # first publish: segment and snapshot
    a.cli("trace", "continue", session)
    a.cli("trace", "add", session, "observation", "Tuesday got booked")
    a.cli("trace", "finish", session, "gym on Thursday")
    a.cli("trace", "publish")
    for node in (b, c):
        wait_for(lambda: node.cli("trace", "merge", ok=False) and _query(node)["consensus"]["conclusion"] == "gym on Thursday",
                 timeout=40, what=f"A's continued session on {node.name}")

    snapshot = json.loads(a.cli("snapshots", "--node", "node1", "--json").output)[-1]["manifest_path"]
    declined = a.cli("restore", Path(snapshot).stem[:-3], ok=False)  # a unique beginning; no terminal to ask on
    assert declined.exit_code == 3 and "Nothing was restored; trace.db is unchanged" in declined.output
    assert "add --yes" in declined.output
    out = a.cli("restore", Path(snapshot).stem[:-3], "--yes").output
    assert "Restored" in out and "trace.db.bak-" in out
    a.cli("trace", "continue", session[:12])  # `trace query` shows 12 characters; they name the session
    a.cli("trace", "add", session, "observation", "the gym is closed")
    a.cli("trace", "finish", session, "run outside")
    a.cli("trace", "publish")

    for node in (a, b, c):
        wait_for(lambda: node.cli("trace", "merge", ok=False) and _forks(node), timeout=40,
                 what=f"the fork on {node.name}")
    views = [_forks(n)[0] for n in (a, b, c)]
    assert len({(v["id"], v["chosen"]) for v in views}) == 1, "every node picks the same branch"
    fork = views[0]
    other = next(br for br in fork["branches"] if br != fork["chosen"])
    b.cli("fork", "approve", fork["id"][:6], other[7:19])  # unique beginnings of both
    b.cli("trace", "publish")
    for node in (a, c):
        wait_for(lambda: node.cli("trace", "merge", ok=False) and _forks(node)[0]["chosen"] == other,
                 timeout=40, what=f"B's decision applied on {node.name}")
        assert _forks(node)[0]["decision"]["author"] == "node2"


def test_bad_segments_are_refused_with_their_reason_and_nothing_merges(node_factory, tmp_path):
    a, b = node_factory("node1"), node_factory("node2")
    code = a.cli("invite").output.strip()
    b.cli("pair", code)  # B trusts A; A need not know B for this
    _record(a, GOAL, "gym on Tuesday", "Monday is full")
    a.cli("trace", "publish")
    _record(a, GOAL, "gym on Friday")
    a.cli("trace", "publish")
    seg_dir = a.home / "trace/recovery/node1"
    copy = b.home / "trace/recovery/node1"
    # the first publish made a snapshot (and pruned segment 1): B bridges with it first
    shutil.copytree(seg_dir / "snapshots", copy / "snapshots")
    assert "bridged node1 up to #1" in b.cli("trace", "merge").output
    before = _steps(b)

    def attempt(mutate) -> str:
        shutil.rmtree(copy / "segments", ignore_errors=True)
        shutil.copytree(seg_dir / "segments", copy / "segments")
        mutate(copy / "segments")
        result = b.cli("trace", "merge", ok=False)
        assert result.exit_code == 1, result.output
        assert _steps(b) == before, "nothing of a refused segment may be merged"
        return result.output

    def truncate(d):
        db = sorted(d.glob("*.db"))[0]
        db.write_bytes(db.read_bytes()[:1000])

    def flip(d):
        db = sorted(d.glob("*.db"))[0]
        data = bytearray(db.read_bytes())
        data[-100] ^= 0xFF
        db.write_bytes(bytes(data))

    def forge(d):
        manifest = sorted(d.glob("*.json"))[0]
        doc = json.loads(manifest.read_text())
        doc["created"] = "2020-01-01T00:00:00.000000Z"
        manifest.write_text(json.dumps(doc))

    assert "sha_mismatch" in attempt(truncate)
    assert "sha_mismatch" in attempt(flip)
    assert "bad_signature" in attempt(forge)


def test_sigkill_during_a_merge_leaves_a_sound_trace_that_merges_on_restart(node_factory):
    a, b = node_factory("node1"), node_factory("node2")
    b.cli("pair", a.cli("invite").output.strip())
    from folders.trace import TraceDB
    with TraceDB(a.home / "trace.db", "node1") as trace:
        for i in range(400):
            s = trace.start_session(f"goal {i % 40}")
            for j in range(60):
                trace.append(s, "observation", f"step {j} of {i}")
            trace.finish(s, f"answer {i % 3}")
    a.cli("trace", "publish")
    shutil.copytree(a.home / "trace/recovery/node1", b.home / "trace/recovery/node1", dirs_exist_ok=True)
    merge = subprocess.Popen([str(Path(sys.executable).with_name("twinsync")), "trace", "merge", "--home", str(b.home)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (b.home / "trace.db-wal").exists() and (b.home / "trace.db-wal").stat().st_size > 0,
                 timeout=30, interval=0.01, what="the merge to start writing")
    finally:
        merge.send_signal(signal.SIGKILL)
        merge.wait()
    conn = sqlite3.connect(b.home / "trace.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    b.cli("trace", "merge")
    assert _steps(b) == _steps(a)


def test_restore_onto_a_new_machine_from_a_peers_copy(mesh, node_factory):
    a, b = mesh(2)
    _record(a, GOAL, "gym on Tuesday", "Monday is full")
    a.cli("trace", "publish")
    def verified_on_b() -> bool:
        listed = json.loads(b.cli("snapshots", "--node", "node1", "--verify", "--json").output)
        return bool(listed) and all(s["verified"] == "ok" for s in listed)

    wait_for(verified_on_b, timeout=30, what="A's snapshot on B, its .db as well as its manifest")
    a.syncthing.stop()  # node1's machine dies
    d = node_factory("node4")
    d.cli("pair", _invite_from_trust(b, "node1"))
    shutil.copytree(b.home / "trace/recovery/node1", d.home / "trace/recovery/node1", dirs_exist_ok=True)
    refused = d.cli("restore", "--node", "node1", "--yes", ok=False)
    assert refused.exit_code == 1 and "--as-new-machine" in refused.output
    d.cli("restore", "--node", "node1", "--as-new-machine", "--yes")
    assert _query(d)["consensus"]["conclusion"] == "gym on Tuesday"
    _record(d, GOAL, "gym on Monday")
    report = json.loads(d.cli("trace", "publish", "--json").output)
    assert report["segment"].startswith("seg-00000001-")


def _invite_from_trust(node, peer: str) -> str:
    """The dead node cannot print an invite any more: rebuild it from a peer's trust file."""
    import tomllib

    from folders.invite import Invite
    entry = tomllib.loads((node.home / "trusted.toml").read_text())["peers"][peer]
    return Invite(peer, entry["device_id"], tuple(entry["addresses"]), entry["public_key"]).encode()


def test_restore_from_the_oldest_snapshot_loses_no_published_step(node_factory):
    """A peer's snapshot can claim our own older segments as merged; they must then count as
    covered, not block our newer segments (found by a 5-node demo run)."""
    a, b = node_factory("node1"), node_factory("node2")
    a.cli("pair", b.cli("invite").output.strip())
    b.cli("pair", a.cli("invite").output.strip())
    config = a.home / "twinsync.toml"
    config.write_text(config.read_text().replace("snapshot_every_segments = 20", "snapshot_every_segments = 3"))
    for i in range(7):
        _record(a, f"goal {i}", f"answer {i}")
        a.cli("trace", "publish")
    shutil.copytree(a.home / "trace/recovery/node1", b.home / "trace/recovery/node1", dirs_exist_ok=True)
    b.cli("trace", "merge")
    b.cli("trace", "publish")  # B's snapshot now claims A's segments as merged
    shutil.copytree(b.home / "trace/recovery/node2", a.home / "trace/recovery/node2", dirs_exist_ok=True)
    published = _steps(a)
    shadow = a.cli("trace", "start", "still thinking").output.strip()  # unpublished work
    oldest = json.loads(a.cli("snapshots", "--node", "node1", "--json").output)[-1]["manifest_path"]
    restored = a.cli("restore", Path(oldest).stem, "--yes").output
    assert _steps(a) >= published
    assert "1 unpublished session(s) of this node are back on top" in restored
    a.cli("trace", "finish", shadow, "thought it through")  # work goes on where it stopped


def _deliver(src: Path, dest: Path, *names: str) -> None:
    """Out-of-order delivery: copy these files of a peer's folder, .db before manifest."""
    for name in sorted(names, key=lambda n: n.endswith(".json")):
        found = next(src.rglob(name))
        target = dest / found.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(found, target)


def _pair_of(folder: Path, sub: str, index: int) -> tuple[str, str]:
    manifest = sorted((folder / sub).glob("*.json"))[index]
    return manifest.with_suffix(".db").name, manifest.name


def test_a_segment_delivered_after_a_later_one_is_merged_and_no_step_is_lost(node_factory):
    """Issue 10 finding 1: seq 3 and a snapshot that does not cover seq 2 arrive first."""
    a, b = node_factory("node1"), node_factory("node2")
    b.cli("pair", a.cli("invite").output.strip())
    for goal in ("g1", "g2", "g3"):
        _record(a, goal, f"{goal} done", "thinking")
        a.cli("trace", "publish")
    src, dest = a.home / "trace/recovery/node1", b.home / "trace/recovery/node1"
    snapshots = sorted((src / "snapshots").glob("*.json"))
    assert [json.loads(p.read_text())["seq"] for p in snapshots] == [1]  # covers seq 1 only
    # (segment 1 was pruned once that snapshot was made; segments 2 and 3 remain)
    _deliver(src, dest, *_pair_of(src, "segments", 1), *_pair_of(src, "snapshots", 0))

    first = b.cli("trace", "merge")
    assert first.exit_code == 0, first.output
    assert "segment #2 of node1 has not arrived" in first.output
    report = json.loads(b.cli("trace", "merge", "--json").output)
    assert report["gaps"] == [["node1", 2, report["gaps"][0][2]]] and report["refused"] == []
    row = {r["name"]: r for r in json.loads(b.cli("nodes", "--json").output)}["node1"]
    assert row["pieces"]["gap"][0] == 2 and row["pieces"]["waiting"] and not row["pieces"]["overdue"]
    # logged once per file and reason, however often the merge runs; its time says since when
    state = sqlite3.connect(b.home / "state.db")
    try:
        assert state.execute("SELECT count(*) FROM events WHERE kind = 'waiting'").fetchone()[0] == 1
        state.execute("UPDATE events SET ts = '2026-01-01T00:00:00Z' WHERE kind = 'waiting'")
        state.commit()
    finally:
        state.close()
    row = {r["name"]: r for r in json.loads(b.cli("nodes", "--json").output)}["node1"]
    assert row["pieces"]["overdue"] and row["pieces"]["waiting_since"] == "2026-01-01T00:00:00Z"
    assert "node1: warning: waiting for segment #2 since 2026-01-01T00:00:00Z" in b.cli("nodes").output

    _deliver(src, dest, *_pair_of(src, "segments", 0))
    second = b.cli("trace", "merge")
    assert "merged node1 #2" in second.output and "merged node1 #3" in second.output
    assert _steps(a) <= _steps(b), "every published step of node1, by hash, is on node2"
    assert b.cli("trace", "merge").output.strip() == "Nothing new to merge."


def test_unreadable_pieces_are_reported_not_silent(node_factory):
    """Issue 10 finding 2: each bad file in a peer's folder is refused or waiting, with why."""
    a, b = node_factory("node1"), node_factory("node2")
    b.cli("pair", a.cli("invite").output.strip())
    for goal in ("g1", "g2"):
        _record(a, goal, f"{goal} done")
        a.cli("trace", "publish")
    src, dest = a.home / "trace/recovery/node1", b.home / "trace/recovery/node1"
    _deliver(src, dest, *_pair_of(src, "snapshots", 0))  # covers seq 1 (segment 1 is pruned)
    segments = dest / "segments"
    segments.mkdir()
    (segments / "seg-00000090-00000091.json").write_text("")
    (segments / "seg-00000092-00000093.json").mkdir()
    fifo_db, fifo_manifest = _pair_of(src, "segments", 0)
    os.mkfifo(segments / fifo_db)
    _deliver(src, dest, fifo_manifest)

    result = b.cli("trace", "merge", ok=False)  # never blocks on the FIFO
    assert result.exit_code == 1
    assert "bridged node1 up to #1" in result.output
    assert "seg-00000090-00000091.json is empty" in result.output
    assert "seg-00000092-00000093.json is a directory" in result.output
    assert f"{fifo_db} is a FIFO" in result.output
    report = json.loads(b.cli("trace", "merge", "--json", ok=False).output)
    assert sorted(Path(path).name for path, _, _ in report["refused"]) == sorted(
        ["seg-00000090-00000091.json", "seg-00000092-00000093.json", fifo_db])
    row = {r["name"]: r for r in json.loads(b.cli("nodes", "--json").output)}["node1"]
    assert len(row["pieces"]["refused"]) == 3
    text = b.cli("nodes").output
    assert "node1: refused (not_a_file)" in text and "is a FIFO" in text


def test_restore_is_refused_while_the_daemon_runs_and_changes_nothing(node_factory, daemon_factory):
    """Issue 10 finding 4: a restore beside a running daemon lost the open session's steps
    into trace.db.bak-*; now it refuses before asking, names the daemon, and touches nothing."""
    a = node_factory("node1")
    _record(a, "goal", "answer")
    a.cli("trace", "publish")
    shadow = a.cli("trace", "start", "still thinking").output.strip()
    daemon = daemon_factory(a)
    refused = a.cli("restore", "--latest", "--yes", ok=False)
    assert refused.exit_code == 1
    assert f"daemon (pid {daemon.proc.pid}) is running" in refused.output and "Traceback" not in refused.output
    assert not list(a.home.glob("trace.db.bak-*"))
    daemon.stop()
    restored = a.cli("restore", "--latest", "--yes").output
    assert "1 unpublished session(s) of this node are back on top" in restored
    a.cli("trace", "finish", shadow, "thought it through")
