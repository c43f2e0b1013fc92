"""A conflict copy whose original is gone: a delete that won over an edit (Syncthing 2.x makes
these; with 1.x a user may delete the original by hand). Approving it must be a choice to
bring the frame back, not a side effect of approving a conflict."""

from __future__ import annotations

import json
import subprocess

import pytest
from rich.console import Console
from typer.testing import CliRunner

from orchestrator.cli.app import app
from orchestrator.frames import list_conflicts, pipeline_for
from orchestrator.node import Node
from tui.rows import conflict_detail, queue_entries
from tui.service import QueueData

pytestmark = pytest.mark.integration

ORIGINAL = "notes/gone.frame.json"
COPY = "notes/gone.frame.sync-conflict-20261125-080000-AAAAAAA.json"


def _queue(node, *extra: str) -> list[dict]:
    return json.loads(node.cli("conflicts", "--json", *extra).output)


def _reconcile(node) -> None:
    """What the daemon's reconcile does, run once."""
    with Node.open(node.home) as opened, pipeline_for(opened) as pipeline:
        pipeline.process(pipeline.changed_on_disk())


def _deleted_here_edited_there(node, *, delete: bool = True) -> bytes:
    """notes/gone committed, then its edit kept only as a conflict copy and the original deleted."""
    node.cli("frame", "put", "notes/gone", "--body", '{"v": 1}')
    shared = node.home / "frames.shared"
    node.cli("frame", "put", "notes/gone", "--body", '{"v": 2}')
    edit = (shared / ORIGINAL).read_bytes()
    node.cli("frame", "restore", "notes/gone", "--to", "HEAD~1")  # the original back at v1
    (shared / COPY).write_bytes(edit)
    if delete:
        (shared / ORIGINAL).unlink()
    return edit


def _wide(node, *args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--home", str(node.home)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_a_copy_whose_original_is_gone_is_a_deleted_item_that_approve_restores(node_factory):
    node = node_factory("n1")
    edit = _deleted_here_edited_there(node)
    _reconcile(node)
    (item,) = _queue(node)
    assert (item["kind"], item["frame"], item["device"], item["theirs_author"]) == ("deleted", "notes/gone", "AAAAAAA", "n1")
    listed = _wide(node, "conflicts")
    assert "│ deleted " in listed and "by n1, " in listed
    shown = node.cli("conflict", "show", str(item["id"])).output
    assert "current version: none: the frame was deleted (a delete carries no author)" in shown
    assert "set-aside version: by n1, written at " in shown
    assert ("approve: the set-aside version by n1 comes back as notes/gone on every node, undoing the "
            "delete; the conflict copy is removed.") in shown
    assert "reject: notes/gone stays deleted on every node" in shown
    assert '+  "v": 2' in shown
    coloured = CliRunner().invoke(app, ["conflict", "show", str(item["id"]), "--home", str(node.home)],
                                  env={"FORCE_COLOR": "1"}).output
    assert "\x1b[" in next(line for line in coloured.splitlines() if '"v": 2' in line)  # highlighted like any diff

    node.cli("approve", str(item["id"]))
    assert (node.home / "frames.shared" / ORIGINAL).read_bytes() == edit
    assert not (node.home / "frames.shared" / COPY).exists()
    assert json.loads(node.cli("frame", "get", "notes/gone").output) == {"v": 2}
    log = json.loads(node.cli("frame", "log", "notes/gone", "--json").output)
    assert log[0]["message"].startswith("notes/gone: the set-aside version by n1 comes back, undoing the delete "
                                        f"(approved on n1, queue item #{item['id']})")
    assert [i["status"] for i in _queue(node, "--all")] == ["approved"]


def test_rejecting_a_deleted_item_keeps_the_delete_and_the_edit_on_its_branch(node_factory):
    node = node_factory("n1")
    edit = _deleted_here_edited_there(node)
    _reconcile(node)
    (item,) = _queue(node)
    node.cli("reject", str(item["id"]))
    shared = node.home / "frames.shared"
    assert not (shared / ORIGINAL).exists() and not (shared / COPY).exists()
    _reconcile(node)
    assert _queue(node) == []
    on_branch = subprocess.run(["git", f"--git-dir={node.home / 'frames.git'}", "show",
                                f"{item['branch']}:{ORIGINAL}"], capture_output=True, check=True).stdout
    assert on_branch == edit


def test_an_open_conflict_follows_its_original_being_deleted_and_coming_back(node_factory):
    node = node_factory("n1")
    _deleted_here_edited_there(node, delete=False)
    _reconcile(node)
    (item,) = _queue(node)
    assert item["kind"] == "conflict"
    original = node.home / "frames.shared" / ORIGINAL
    kept = original.read_bytes()
    original.unlink()
    _reconcile(node)
    assert [i["kind"] for i in _queue(node)] == ["deleted"]
    original.write_bytes(kept)
    _reconcile(node)
    assert [i["kind"] for i in _queue(node)] == ["conflict"]


def test_the_queue_tab_says_what_was_deleted_and_what_edited(node_factory):
    node = node_factory("n1")
    _deleted_here_edited_there(node)
    _reconcile(node)
    with Node.open(node.home) as opened:
        (item,) = list_conflicts(opened)
    (entry,) = queue_entries(QueueData([item], []))
    assert (entry.kind, entry.source, entry.state) == ("deleted", "deleted · set aside by n1", "open")
    console = Console(width=300, record=True)
    console.print(conflict_detail(item, ""))
    text = console.export_text()
    assert "current version: none: the frame was deleted" in text
    assert f"set-aside version: by n1, written at " in text and f"conflict copy {COPY}, Syncthing named it" in text
    assert "a approve: the set-aside version by n1 comes back" in text
    assert "r reject: notes/gone stays deleted on every node" in text
