"""The frame commands on one real node: they validate, commit and announce on their own,
with or without the daemon, and keep working when Syncthing is down."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from folders.frame import Frame
from folders.keys import load_private_key
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


def _git(node, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={node.home / 'frames.git'}", *args],
                          capture_output=True, check=True, text=True).stdout


def test_put_get_list_log_and_restore(node_factory):
    node = node_factory("n1")
    node.cli("frame", "put", "notes/today", "--body", '{"text": "one"}')
    node.cli("frame", "put", "notes/today", "--body", '{"text": "two"}')
    assert json.loads(node.cli("frame", "get", "notes/today").output) == {"text": "two"}
    full = json.loads(node.cli("frame", "get", "notes/today", "--json").output)
    assert full["author"] == "n1" and len(full["parents"]) == 1

    log = json.loads(node.cli("frame", "log", "notes/today", "--json").output)
    assert [r["author"] for r in log] == ["n1", "n1"]
    first = log[-1]["commit"]
    node.cli("frame", "restore", "notes/today", "--to", first)
    assert json.loads(node.cli("frame", "get", "notes/today").output) == {"text": "one"}
    assert len(json.loads(node.cli("frame", "log", "notes/today", "--json").output)) == 3

    listed = json.loads(node.cli("frame", "list", "--json").output)
    assert [(e["id"], e["ok"]) for e in listed] == [("notes/today", True)]


def test_bad_input_to_frame_commands(node_factory):
    node = node_factory("n1")
    for args, message in [
        (("frame", "put", "../etc/passwd", "--body", "{}"), "Frame id"),
        (("frame", "put", "notes/x", "--body", "[1]"), "must be a JSON object"),
        (("frame", "put", "notes/x", "--body", "{nope"), "not valid JSON"),
        (("frame", "get", "notes/missing"), "notes/missing"),
        (("frame", "log", "notes/missing"), "no history"),
        (("frame", "restore", "notes/missing", "--to", "HEAD"), "notes/missing"),
        (("conflict", "show", "42"), "no conflict #42"),
        (("approve", "42"), "no conflict #42"),
    ]:
        result = node.cli(*args, ok=False)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, (args, result.output)


def test_shadow_frames_stay_local_until_promoted(node_factory):
    node = node_factory("n1")
    node.cli("frame", "put", "drafts/idea", "--body", '{"x": 1}', "--shadow")
    assert (node.home / "frames.local/drafts/idea.frame.json").is_file()
    assert not (node.home / "frames.shared/drafts").exists()
    assert json.loads(node.cli("frame", "list", "--shadow", "--json").output)[0]["id"] == "drafts/idea"
    node.cli("frame", "promote", "drafts/idea")
    assert not (node.home / "frames.local/drafts/idea.frame.json").exists()
    assert "drafts/idea.frame.json" in _git(node, "ls-tree", "-r", "--name-only", "HEAD")


def test_frames_commit_while_syncthing_is_down(node_factory):
    node = node_factory("n1")
    node.syncthing.stop()
    node.cli("frame", "put", "notes/offline", "--body", '{"ok": true}')
    assert "notes/offline.frame.json" in _git(node, "ls-tree", "-r", "--name-only", "HEAD")


def test_bulk_decisions_by_device_and_namespace(node_factory, daemon_factory):
    """Conflict copies as Syncthing names them, dropped in by hand: the daemon queues them."""
    node = node_factory("n1")
    key = load_private_key(node.home / "keys/node.key")
    root = node.home / "frames.shared"
    for ns in ("a", "b"):
        for name in ("x", "y"):
            node.cli("frame", "put", f"{ns}/{name}", "--body", '{"v": "ours"}')
            theirs = Frame.create(f"{ns}/{name}", "n1", {"v": "theirs"}, key)
            device = "AAAAAAA" if ns == "a" else "BBBBBBB"
            copy = root / ns / f"{name}.frame.sync-conflict-20261125-080000-{device}.json"
            copy.write_bytes(theirs.to_bytes())
    same = root / "a" / "x.frame.sync-conflict-20261125-090000-CCCCCCC.json"
    shutil.copy(root / "a/x.frame.json", same)
    daemon_factory(node)
    wait_for(lambda: len(json.loads(node.cli("conflicts", "--json").output)) == 4 and not same.exists(),
             what="four queued conflicts and the identical copy settled")
    items = json.loads(node.cli("conflicts", "--json").output)
    assert sorted(i["frame"] for i in items) == ["a/x", "a/y", "b/x", "b/y"]
    assert all(i["branch"].startswith("fork/") for i in items)

    out = node.cli("approve", "--all-from", "AAAAAAA").output
    assert out.count("approved") == 2
    assert json.loads(node.cli("frame", "get", "a/x").output) == {"v": "theirs"}
    out = node.cli("reject", "--namespace", "b").output
    assert out.count("rejected") == 2
    assert json.loads(node.cli("frame", "get", "b/x").output) == {"v": "ours"}
    assert json.loads(node.cli("conflicts", "--json").output) == []
    assert not list(root.rglob("*sync-conflict*"))
    branches = _git(node, "branch", "--list", "fork/*").split()
    assert len(branches) == 4
    assert '"theirs"' in _git(node, "show", f"{branches[-1]}:b/y.frame.json")
