"""The TUI driven by Textual's pilot on REAL node homes (real Syncthing, Git, SQLite):
decisions and restores made in the TUI change files, Git and trace.db exactly as the CLI
does, and the Syncthing banner follows Syncthing going down and coming back."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from folders.frame import Frame
from folders.keys import load_private_key
from orchestrator.frames import pipeline_for
from orchestrator.node import Node
from tests.tui.helpers import confirm, until
from tui.app import make_app

pytestmark = pytest.mark.integration

COPY = "x.frame.sync-conflict-20261125-080000-AAAAAAA.json"


def _git(node, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={node.home / 'frames.git'}", *args],
                          capture_output=True, check=True, text=True).stdout


def _queue_conflicts(node) -> list[str]:
    """Two frames with a Syncthing-style conflict copy each, queued by one pipeline pass."""
    key = load_private_key(node.home / "keys/node.key")
    root = node.home / "frames.shared"
    copies = []
    for ns in ("a", "b"):
        node.cli("frame", "put", f"{ns}/x", "--body", '{"v": "ours"}')
        theirs = Frame.create(f"{ns}/x", node.name, {"v": "theirs"}, key)
        (root / ns / COPY).write_bytes(theirs.to_bytes())
        copies.append(f"{ns}/{COPY}")
    with Node.open(node.home) as opened, pipeline_for(opened) as pipeline:
        pipeline.process(pipeline.changed_on_disk() | set(copies))
    assert len(json.loads(node.cli("conflicts", "--json").output)) == 2
    return copies


def test_approve_and_reject_from_the_queue_change_files_and_git_as_the_cli_does(node_factory):
    node = node_factory("n1")
    copies = _queue_conflicts(node)
    root = node.home / "frames.shared"

    async def drive() -> None:
        app = make_app(node.home, refresh_s=0.3)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("2")
            queue = app.pane("queue")
            await until(pilot, lambda: len(queue.entries) == 2, "two conflicts in the queue")

            await pilot.press("slash", *"a/x", "enter")  # the filter narrows the list to a/x
            await until(pilot, lambda: [e.subject for e in queue.entries.values()] == ["a/x"], "the filter")
            await until(pilot, lambda: queue.diffs, "the diff of the selected conflict")
            assert '+  "v": "theirs"' in next(iter(queue.diffs.values()))
            await pilot.press("a")
            await confirm(pilot, "Approve conflict", "current version: by n1, written at ",
                          "set-aside version: by n1, written at ",
                          "approve: the set-aside version by n1 becomes a/x on every node; the conflict copy is removed")
            await until(pilot, lambda: not (root / copies[0]).exists(), "the approved copy removed")

            await pilot.press("slash", "ctrl+u", *"b/x", "enter")
            await until(pilot, lambda: [e.subject for e in queue.entries.values()] == ["b/x"], "the filter on b/x")
            await pilot.press("r")
            await confirm(pilot, "Reject conflict", "reject: the current version by n1 stays b/x on every node; "
                          "the conflict copy is removed and the set-aside version by n1 is kept in Git on branch fork/b/x/")
            await until(pilot, lambda: not (root / copies[1]).exists(), "the rejected copy removed")
            await pilot.press("slash", "ctrl+u", "enter")
            await until(pilot, lambda: not queue.entries and queue.data.conflicts == [], "an empty queue")

    asyncio.run(drive())
    # what `twinsync approve` / `reject` leave behind (tests/integration/test_frame_cli.py)
    assert json.loads(node.cli("frame", "get", "a/x").output) == {"v": "theirs"}
    assert json.loads(node.cli("frame", "get", "b/x").output) == {"v": "ours"}
    assert json.loads(node.cli("conflicts", "--json").output) == []
    assert not list(root.rglob("*sync-conflict*"))
    assert "a/x: the set-aside version by n1 becomes current (approved on n1, queue item #" in _git(
        node, "log", "-1", "--format=%s", "--", "a/x.frame.json")
    branches = _git(node, "branch", "--list", "fork/*").split()
    assert len(branches) == 2
    assert '"theirs"' in _git(node, "show", f"{[b for b in branches if b.startswith('fork/b/')][0]}:b/x.frame.json")
    decided = {i["frame"]: (i["status"], i["decided_by"]) for i in
               json.loads(node.cli("conflicts", "--all", "--json").output)}
    assert decided == {"a/x": ("approved", "n1"), "b/x": ("rejected", "n1")}


def _record(node, goal: str, conclusion: str, *steps: str) -> str:
    session = node.cli("trace", "start", goal).output.strip()
    for text in steps:
        node.cli("trace", "add", session, "observation", text)
    node.cli("trace", "finish", session, conclusion)
    return session


def test_verify_and_restore_from_snapshots_then_decide_the_fork_it_makes(node_factory):
    node = node_factory("n1")
    session = _record(node, "plan the week", "gym on Tuesday", "Monday is full")
    node.cli("trace", "publish")  # first publish: a segment and a snapshot
    node.cli("trace", "continue", session)
    node.cli("trace", "add", session, "observation", "Tuesday got booked")
    node.cli("trace", "finish", session, "gym on Thursday")
    node.cli("trace", "publish")
    snapshot = json.loads(node.cli("snapshots", "--json").output)[-1]

    async def restore() -> None:
        app = make_app(node.home, refresh_s=0.3)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.node_name == "n1", "the header's status")
            await pilot.press("3")
            pane = app.pane("snapshots")
            await until(pilot, lambda: pane.infos, "the snapshot list")
            table = app.query_one("#snapshots-table")
            keys = [r.key for r in table.shown]
            table.move_cursor(row=keys.index(snapshot["manifest_path"].split("/")[-1]))
            await pilot.press("v")
            await until(pilot, lambda: "ok" in pane.verdicts.values(), "the snapshot verified")
            await pilot.press("R")
            await confirm(pilot, "Restore from", "kept aside")
            await until(pilot, lambda: list(node.home.glob("trace.db.bak-*")) and not pane.restoring,
                        "the restore done")

    asyncio.run(restore())
    # One backup; its -wal and -shm go with it when a reader (the app's refresh) had the old
    # trace.db open at that moment.
    assert len([p for p in node.home.glob("trace.db.bak-*") if not p.name.endswith(("-wal", "-shm"))]) == 1
    # the restore merged the newer segment back; going on from the snapshot forks the session
    node.cli("trace", "continue", session)
    node.cli("trace", "add", session, "observation", "the gym is closed")
    node.cli("trace", "finish", session, "run outside")
    node.cli("trace", "publish")
    fork = json.loads(node.cli("forks", "--json").output)[0]
    other = next(b for b in fork["branches"] if b != fork["chosen"])

    async def decide() -> None:
        app = make_app(node.home, refresh_s=0.3)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("2")
            queue = app.pane("queue")
            await until(pilot, lambda: any(e.fork for e in queue.entries.values()), "the fork in the queue")
            while queue.branch_of(queue.selected().fork) != other:
                await pilot.press("b")
            await pilot.press("a")
            await confirm(pilot, f"Approve branch {other[7:19]}", "A decision step is recorded and published")
            await until(pilot, lambda: any(e.fork and e.fork.decision for e in queue.entries.values()),
                        "the decision shown")

    asyncio.run(decide())
    after = json.loads(node.cli("forks", "--json").output)[0]
    assert after["chosen"] == other and after["decision"]["author"] == "n1"


def test_banner_shows_when_syncthing_stops_and_clears_when_it_is_back(node_factory):
    node = node_factory("n1")

    async def drive() -> None:
        app = make_app(node.home, refresh_s=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            banner = app.query_one("#banner")
            await until(pilot, lambda: app.status is not None and app.status.syncthing_ok, "Syncthing answering")
            assert not banner.display
            node.syncthing.stop()
            await until(pilot, lambda: banner.display, "the banner", timeout=30)
            assert "Nothing answers at" in str(banner.content), banner.content
            assert "twinsync syncthing start" in str(banner.content)
            node.syncthing.start()
            await until(pilot, lambda: not banner.display, "the banner gone", timeout=30)

    asyncio.run(drive())


def test_rollbacks_and_quarantined_files_show_in_the_queue_and_are_decided_there(node_factory):
    """The queue kinds of finding 7: each says what approve and reject do, and the decision
    made in the TUI changes files and Git as `twinsync approve|reject` does."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    node = node_factory("n1")
    root = node.home / "frames.shared"
    node.cli("frame", "put", "notes/today", "--body", '{"v": 1}')
    node.cli("frame", "put", "notes/today", "--body", '{"v": 2}')
    first = json.loads(node.cli("frame", "log", "notes/today", "--json").output)[-1]["commit"]
    (root / "notes/today.frame.json").write_bytes(_git(node, "show", f"{first}:notes/today.frame.json").encode())
    copy = root / "notes" / "gone.frame.sync-conflict-20261125-080000-AAAAAAA.json"
    copy.write_bytes(Frame.create("notes/gone", "n1", {"v": 1}, Ed25519PrivateKey.generate()).to_bytes())
    with Node.open(node.home) as opened, pipeline_for(opened) as pipeline:
        pipeline.process(pipeline.changed_on_disk() | {"notes/" + copy.name})
    quarantined = node.home / "quarantine" / "notes" / copy.name
    assert quarantined.is_file()

    async def drive() -> None:
        app = make_app(node.home, refresh_s=0.3)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("2")
            queue = app.pane("queue")
            await until(pilot, lambda: {e.kind for e in queue.entries.values()} == {"rollback", "quarantined"},
                        "a rollback and a quarantined file in the queue")
            await pilot.press("slash", *"rollback", "enter")
            await until(pilot, lambda: [e.kind for e in queue.entries.values()] == ["rollback"], "the filter")
            (entry,) = queue.entries.values()
            assert (entry.source, entry.state) == (f"current by n1 · set aside by n1 (revision {first[:12]})", "open")
            await until(pilot, lambda: queue.diffs, "the diff of the rollback")
            assert '+  "v": 1' in next(iter(queue.diffs.values()))
            await pilot.press("a")
            await confirm(pilot, "Approve rollback", f"approve: the set-aside version by n1 (revision {first[:12]}) "
                          "becomes notes/today on every node; it is committed.")
            await until(pilot, lambda: [e.kind for e in queue.entries.values()] == [], "the rollback decided")

            await pilot.press("slash", "ctrl+u", *"quarantined", "enter")
            await until(pilot, lambda: [e.kind for e in queue.entries.values()] == ["quarantined"], "the filter")
            detail = str(app.query_one("#queue-detail").render())
            assert "bad_signature" in detail and str(quarantined.parent) in detail
            await pilot.press("r")
            await confirm(pilot, "Reject quarantined", "reject: the file is deleted from")
            await until(pilot, lambda: not quarantined.exists(), "the quarantined file deleted")
            await pilot.press("slash", "ctrl+u", "enter")
            await until(pilot, lambda: not queue.entries and queue.data.conflicts == [], "an empty queue")

    asyncio.run(drive())
    log = json.loads(node.cli("frame", "log", "notes/today", "--json").output)
    assert len(log) == 3 and f"(revision {first[:12]}, written back" in log[0]["message"]
    decided = {i["kind"]: (i["status"], i["decided_by"]) for i in
               json.loads(node.cli("conflicts", "--all", "--json").output)}
    assert decided == {"rollback": ("approved", "n1"), "quarantined": ("rejected", "n1")}


def test_the_daemon_pushes_its_events_so_the_queue_shows_a_new_conflict_without_waiting(node_factory,
                                                                                         daemon_factory):
    node = node_factory("n1")
    node.cli("frame", "put", "a/x", "--body", '{"v": "ours"}')
    daemon_factory(node)

    async def drive() -> None:
        app = make_app(node.home, refresh_s=600)  # the timer never fires during the test
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.service.watching, "the TUI watching the daemon's events")
            queue = app.pane("queue")
            assert queue.entries == {}
            key = load_private_key(node.home / "keys/node.key")
            theirs = Frame.create("a/x", node.name, {"v": "theirs"}, key)
            (node.home / "frames.shared" / "a" / COPY).write_bytes(theirs.to_bytes())
            await until(pilot, lambda: len(queue.entries) == 1, "the conflict pushed to the queue", timeout=20)

    asyncio.run(drive())
