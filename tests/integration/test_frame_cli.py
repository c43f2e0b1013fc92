"""The frame commands on one real node: they validate, commit and announce on their own,
with or without the daemon, and keep working when Syncthing is down."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from folders.frame import Frame
from folders.keys import load_private_key
from orchestrator.cli.app import app
from orchestrator.frames import pipeline_for, revision_diff
from orchestrator.node import Node
from tests.conftest import stays_false, wait_for

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
    with Node.open(node.home) as opened:  # what the TUI's `t` shows before it asks
        preview = revision_diff(opened, "notes/today", first)
    assert preview.startswith(f"--- current version (by n1)\n+++ revision {first[:12]} (by n1)\n")
    assert '-  "text": "two"\n+  "text": "one"\n' in preview and preview.endswith("\n }")
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


def _wide(node, *args: str) -> str:
    """The command's output on a 200-column terminal, so table cells are not wrapped."""
    result = CliRunner().invoke(app, [*args, "--home", str(node.home)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def _queue(node, *extra: str) -> list[dict]:
    return json.loads(node.cli("conflicts", "--json", *extra).output)


def _set_max_size(node, size: int) -> None:
    config = node.home / "twinsync.toml"
    text = config.read_text()
    assert "max_size = 16777216" in text
    config.write_text(text.replace("max_size = 16777216", f"max_size = {size}"))


def _assert_one_sentence(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.startswith("Error: "), result.output
    assert result.output.count("\n") == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_put_over_max_size_is_refused_before_anything_is_written(node_factory, tmp_path):
    """Finding 5: a 20 MB body used to be written into frames.shared/, queued as invalid and
    sent to every peer while `frame put` said "saved"."""
    node = node_factory("n1")
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"pad": "x" * (20 * 1024 * 1024)}))
    head = _git(node, "rev-parse", "HEAD")
    result = node.cli("frame", "put", "notes/big", "--file", big, ok=False)
    _assert_one_sentence(result, "notes/big", "was not saved", "16777216-byte frame limit",
                         "split its content into smaller frames")
    assert not (node.home / "frames.shared/notes").exists()
    assert _queue(node, "--all") == []
    assert _git(node, "rev-parse", "HEAD") == head
    # a shadow is held to the same limit: it could never be promoted
    _assert_one_sentence(node.cli("frame", "put", "notes/big", "--file", big, "--shadow", ok=False),
                         "was not saved")
    assert not (node.home / "frames.local/notes").exists()


def test_promote_and_restore_are_refused_before_writing_when_over_max_size(node_factory):
    node = node_factory("n1")
    node.cli("frame", "put", "drafts/idea", "--body", json.dumps({"pad": "y" * 3000}), "--shadow")
    node.cli("frame", "put", "notes/today", "--body", json.dumps({"pad": "x" * 3000}))
    node.cli("frame", "put", "notes/today", "--body", '{"short": true}')
    old = json.loads(node.cli("frame", "log", "notes/today", "--json").output)[-1]["commit"]
    current = (node.home / "frames.shared/notes/today.frame.json").read_bytes()
    _set_max_size(node, 2000)

    _assert_one_sentence(node.cli("frame", "promote", "drafts/idea", ok=False), "2000-byte frame limit")
    assert (node.home / "frames.local/drafts/idea.frame.json").is_file()
    assert not (node.home / "frames.shared/drafts").exists()
    _assert_one_sentence(node.cli("frame", "restore", "notes/today", "--to", old, ok=False),
                         "notes/today", "was not saved", "2000-byte frame limit")
    assert (node.home / "frames.shared/notes/today.frame.json").read_bytes() == current
    assert len(json.loads(node.cli("frame", "log", "notes/today", "--json").output)) == 2
    assert _queue(node, "--all") == []


def test_deeply_nested_bodies_get_one_sentence_not_a_crash(node_factory, tmp_path):
    """Finding 6: `frame put --file` of JSON nested 100,000 levels crashed with exit 70."""
    node = node_factory("n1")
    deep = tmp_path / "deep.json"
    deep.write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    result = node.cli("frame", "put", "notes/deep", "--file", deep, ok=False)
    _assert_one_sentence(result, str(deep), "nested more than 100 levels deep")
    body = '{"a":' * 150 + "1" + "}" * 150  # parses, but past the limit every node applies
    _assert_one_sentence(node.cli("frame", "put", "notes/deep", "--body", body, ok=False),
                         "nested more than 100 levels deep")
    assert not (node.home / "frames.shared/notes").exists()
    node.cli("frame", "put", "notes/deep", "--body", '{"a":' * 99 + "1" + "}" * 99)


def test_a_5000_character_id_is_echoed_once_and_cut(node_factory):
    """Finding 7: a 5,000-character id was echoed twice in full (10 KB of output)."""
    node = node_factory("n1")
    long_id = "notes/" + "x" * 5000
    for args in (("frame", "put", long_id, "--body", "{}"), ("frame", "put", long_id, "--body", "[1]"),
                 ("frame", "get", long_id), ("frame", "log", long_id), ("frame", "promote", long_id),
                 ("frame", "restore", "notes/x", "--to", "r" * 5000), ("frame", "restore", long_id, "--to", "HEAD")):
        result = node.cli(*args, ok=False)
        _assert_one_sentence(result, "characters)")
        assert len(result.output) < 500, (args[:2], len(result.output))


def _rolled_back(node) -> tuple[str, bytes]:
    """Two versions of notes/today, then the first one's exact bytes written back."""
    node.cli("frame", "put", "notes/today", "--body", '{"v": 1}')
    node.cli("frame", "put", "notes/today", "--body", '{"v": 2}')
    first = json.loads(node.cli("frame", "log", "notes/today", "--json").output)[-1]["commit"]
    newer = (node.home / "frames.shared/notes/today.frame.json").read_bytes()
    old = _git(node, "show", f"{first}:notes/today.frame.json").encode()
    (node.home / "frames.shared/notes/today.frame.json").write_bytes(old)
    return first, newer


def test_a_rollback_is_held_as_a_queue_item_and_reject_restores_the_newer_version(node_factory, daemon_factory):
    """Finding 7: an older genuine version written back was committed as a new revision."""
    node = node_factory("n1")
    first, newer = _rolled_back(node)
    daemon_factory(node)
    items = wait_for(lambda: [i for i in _queue(node) if i["kind"] == "rollback"], what="a rollback item")
    assert [(i["frame"], i["revision"], i["theirs_author"], i["status"]) for i in items] == [
        ("notes/today", first, "n1", "open")]
    listed = _wide(node, "conflicts")
    assert "rollback" in listed and "by n1, " in listed
    shown = node.cli("conflict", "show", str(items[0]["id"])).output
    assert f"set-aside version: by n1, written at " in shown and f"(revision {first[:12]}, written back" in shown
    assert "approve: the set-aside version by n1" in shown and "reject: the current version by n1 is written back" in shown
    assert '-  "v": 2' in shown and '+  "v": 1' in shown
    assert len(json.loads(node.cli("frame", "log", "notes/today", "--json").output)) == 2, "not committed"

    assert "rejected" in node.cli("reject", str(items[0]["id"])).output
    assert (node.home / "frames.shared/notes/today.frame.json").read_bytes() == newer
    assert json.loads(node.cli("frame", "get", "notes/today").output) == {"v": 2}
    assert len(json.loads(node.cli("frame", "log", "notes/today", "--json").output)) == 2
    assert _queue(node) == []


def test_approving_a_rollback_commits_the_older_version(node_factory):
    node = node_factory("n1")
    first, _ = _rolled_back(node)
    with Node.open(node.home) as opened, pipeline_for(opened) as pipeline:  # the daemon's reconcile
        pipeline.process(pipeline.changed_on_disk())
    (item,) = _queue(node)
    assert item["kind"] == "rollback" and item["revision"] == first
    node.cli("approve", str(item["id"]))
    log = json.loads(node.cli("frame", "log", "notes/today", "--json").output)
    assert len(log) == 3 and f"(revision {first[:12]}, written back" in log[0]["message"]
    assert json.loads(node.cli("frame", "get", "notes/today").output) == {"v": 1}
    assert _queue(node) == []
    assert [i["status"] for i in _queue(node, "--all")] == ["approved"]
    # an edit after the rollback is an ordinary new version again
    node.cli("frame", "put", "notes/today", "--body", '{"v": 3}')
    assert _queue(node) == []


def test_a_conflict_copy_changed_after_it_was_queued_is_not_approved_into_git(node_factory):
    """Approving a copy commits its bytes: they must still be the version the item was
    queued with (a writer may have replaced the copy before the daemon looked again), or
    unjudged bytes would reach Git."""
    node = node_factory("n1")
    node.cli("frame", "put", "a/x", "--body", '{"v": "ours"}')
    key = load_private_key(node.home / "keys/node.key")
    copy = node.home / "frames.shared" / "a" / "x.frame.sync-conflict-20261125-080000-AAAAAAA.json"
    copy.write_bytes(Frame.create("a/x", "n1", {"v": "theirs"}, key).to_bytes())
    with Node.open(node.home) as opened, pipeline_for(opened) as pipeline:
        pipeline.process({"a/" + copy.name})
    (item,) = json.loads(node.cli("conflicts", "--json").output)
    head = _git(node, "rev-parse", "HEAD")
    for written in (b'{"not": "a frame"}', Frame.create("a/x", "n1", {"v": "another"}, key).to_bytes()):
        copy.write_bytes(written)
        out = node.cli("approve", str(item["id"]), ok=False)
        assert out.exit_code == 1 and "changed since item" in out.output
        assert _git(node, "rev-parse", "HEAD") == head and copy.read_bytes() == written
        assert json.loads(node.cli("frame", "get", "a/x").output) == {"v": "ours"}
    assert [i["status"] for i in json.loads(node.cli("conflicts", "--json").output)] == ["open"]


def test_an_orphan_conflict_copy_that_fails_its_checks_is_quarantined_and_shown(node_factory, daemon_factory):
    """Finding 7: the quarantined copy was moved away without any item anyone could see."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    node = node_factory("n1")
    copy = node.home / "frames.shared/notes/gone.frame.sync-conflict-20261125-080000-AAAAAAA.json"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(Frame.create("notes/gone", "n1", {"v": 1}, Ed25519PrivateKey.generate()).to_bytes())
    daemon_factory(node)
    (item,) = wait_for(lambda: _queue(node), what="the quarantined copy in the queue")
    assert (item["kind"], item["status"], item["frame"]) == ("quarantined", "open", "notes/gone")
    assert item["reason"].startswith("bad_signature") and not copy.exists()
    location = node.home / "quarantine" / "notes" / copy.name
    assert item["location"] == str(location) and location.is_file()
    stays_false(lambda: _queue(node)[0]["status"] != "open", seconds=2)  # the copy's deletion closes nothing
    listed = _wide(node, "conflicts")
    assert "quarantined" in listed and "bad_signature" in listed
    shown = node.cli("conflict", "show", str(item["id"])).output
    assert "reject: the file is deleted from" in shown
    node.cli("reject", str(item["id"]))
    assert not location.exists() and _queue(node) == []


def test_quarantined_items_of_an_older_state_db_become_visible(node_factory):
    """Schema 3: homes made before it filed quarantined copies away with status 'quarantined'."""
    import sqlite3
    node = node_factory("n1")
    with sqlite3.connect(node.home / "state.db") as db:
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        db.execute("INSERT INTO conflicts (kind, frame, path, status, reason, created) VALUES "
                   "('quarantined', 'notes/x', 'notes/x.frame.json', 'quarantined', 'bad_signature: forged', "
                   "'2026-11-25T08:00:00Z')")
    db.close()
    (item,) = _queue(node)
    assert (item["kind"], item["status"]) == ("quarantined", "open")
