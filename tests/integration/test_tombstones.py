"""A deleted frame that comes back with a version from before its delete (Syncthing 2.x forgets
a deletion after its retention interval, so a node offline for longer announces its old copy
as a plain new file): every node holds it as a rollback of the deletion instead of committing
it; a genuinely new version (an edit of the deleted one, or a new frame) is committed."""

from __future__ import annotations

import json
import sqlite3

import pytest

from folders.frame import Frame, save_frame
from folders.keys import load_private_key
from orchestrator.frames import pipeline_for
from orchestrator.node import Node
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

FRAME = "notes/gone"
REL = "notes/gone.frame.json"


def _history(node) -> list[dict]:
    result = node.cli("frame", "log", FRAME, "--json", ok=False)
    return json.loads(result.output) if result.exit_code == 0 else []


def _body(node):
    result = node.cli("frame", "get", FRAME, ok=False)
    return json.loads(result.output) if result.exit_code == 0 else None


def _held(node) -> list[dict]:
    return [i for i in json.loads(node.cli("conflicts", "--json").output) if i["kind"] == "rollback"]


def _tombstone(node) -> dict | None:
    conn = sqlite3.connect(node.home / "state.db")
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM tombstones WHERE path = ?", [REL]).fetchone()
    finally:
        conn.close()
    return dict(row) if row else None


def test_a_deleted_frame_brought_back_is_held_everywhere_and_a_new_version_is_not(mesh, daemon_factory):
    a, b = mesh(2)
    for node in (a, b):
        daemon_factory(node)
    a.cli("frame", "put", FRAME, "--body", '{"v": 1}')
    wait_for(lambda: len(_history(b)) == 1, timeout=20, what="v1 committed on node2")
    v1 = (a.home / "frames.shared" / REL).read_bytes()
    a.cli("frame", "put", FRAME, "--body", '{"v": 2}')
    wait_for(lambda: len(_history(b)) == 2, timeout=20, what="v2 committed on node2")
    v2 = (a.home / "frames.shared" / REL).read_bytes()
    v2_hash = json.loads(v2)["hash"]

    (a.home / "frames.shared" / REL).unlink()
    for node in (a, b):
        stone = wait_for(lambda: _tombstone(node), timeout=30, what=f"the tombstone on {node.name}")
        assert (stone["frame_id"], stone["hash"], stone["deleted_by"]) == (FRAME, v2_hash, "node1")

    # node2 "was offline": its old copy comes back as a plain new file.
    (b.home / "frames.shared" / REL).write_bytes(v1)
    for node in (a, b):
        (item,) = wait_for(lambda: _held(node), timeout=30, what=f"the comeback held on {node.name}")
        assert item["ours_hash"] is None and item["ours_author"] == "node1"
        assert "came back after the frame was deleted by node1" in item["reason"]
        assert len(_history(node)) == 3, f"{node.name} committed the comeback"  # v1, v2, the delete
    shown = b.cli("conflict", "show", str(_held(b)[0]["id"])).output
    assert "came back after the delete and held back" in shown and "undoing its deletion by node1" in shown
    assert "reject: the file is deleted again on every node" in shown and '+  "v": 1' in shown

    a.cli("reject", str(_held(a)[0]["id"]))
    for node in (a, b):
        wait_for(lambda: not (node.home / "frames.shared" / REL).exists() and not _held(node), timeout=30,
                 what=f"the frame deleted again on {node.name}")
        assert len(_history(node)) == 3 and _tombstone(node)["hash"] == v2_hash

    # The last version itself, at the tombstone, is held too; approved, the frame is back.
    (b.home / "frames.shared" / REL).write_bytes(v2)
    for node in (a, b):
        wait_for(lambda: _held(node), timeout=30, what=f"v2 held on {node.name}")
    for node in (a, b):
        node.cli("approve", str(_held(node)[0]["id"]))
        assert _body(node) == {"v": 2}
        assert "undoing the delete" in _history(node)[0]["message"] and _tombstone(node) is None

    # A genuinely new version after a delete: an edit of the deleted version is committed.
    (a.home / "frames.shared" / REL).unlink()
    wait_for(lambda: _tombstone(b), timeout=30, what="the second tombstone on node2")
    edit = Frame.create(FRAME, "node1", {"v": 3}, load_private_key(a.home / "keys" / "node.key"),
                        parents=(v2_hash,))
    save_frame(a.home / "frames.shared", edit)
    for node in (a, b):
        # Git is committed first and state.db after, in one batch: wait for the batch's end
        wait_for(lambda: _body(node) == {"v": 3} and _history(node)[0]["author"] == "node1"
                 and _tombstone(node) is None, timeout=30, what=f"the edit committed on {node.name}")
        assert not _held(node)


def _reconcile(node) -> None:
    """What the daemon's reconcile does, run once."""
    with Node.open(node.home) as opened, pipeline_for(opened) as pipeline:
        pipeline.process(pipeline.changed_on_disk())


def test_a_lost_state_db_gets_its_tombstones_back_from_git(node_factory):
    node = node_factory("n1")
    shared = node.home / "frames.shared"
    node.cli("frame", "put", FRAME, "--body", '{"v": 1}')
    v1 = (shared / REL).read_bytes()
    (shared / REL).unlink()
    _reconcile(node)
    assert _tombstone(node)["deleted_by"] == "n1"  # Syncthing had not seen the delete: made here
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (node.home / name).unlink(missing_ok=True)

    assert _held(node) == []  # the first command makes a new state.db, rebuilt from Git
    stone = _tombstone(node)
    assert (stone["hash"], stone["deleted_by"]) == (json.loads(v1)["hash"], "unknown")
    (shared / REL).write_bytes(v1)
    _reconcile(node)
    (item,) = _held(node)
    assert item["ours_hash"] is None and len(_history(node)) == 2 and _body(node) == {"v": 1}
