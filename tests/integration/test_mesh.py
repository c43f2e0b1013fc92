"""Three real Syncthing nodes paired only through `invite`/`pair` replicate as DESIGN §1 says."""

from __future__ import annotations

import pytest

from syncthing.folderspec import recovery_folder_id
from tests.conftest import stays_false, wait_for

pytestmark = pytest.mark.integration


def _connected_peers(node) -> set[str]:
    return {p["name"] for p in node.status()["peers"] if p["connected"]}


def test_three_nodes_pair_and_replicate_with_one_writer_per_recovery_folder(mesh):
    a, b, c = mesh(3)

    for node in (a, b, c):
        others = {n.name for n in (a, b, c)} - {node.name}
        wait_for(lambda: _connected_peers(node) == others, what=f"{node.name} connected to {others}")

    (a.home / "frames.shared" / "hello.txt").write_text("from A")
    for node in (b, c):
        target = node.home / "frames.shared" / "hello.txt"
        wait_for(lambda: target.exists() and target.read_text() == "from A",
                 what=f"frames file on {node.name}")

    (a.home / "trace/recovery/node1/seg.txt").write_text("A's segment")
    for node in (b, c):
        target = node.home / "trace/recovery/node1/seg.txt"
        wait_for(lambda: target.exists() and target.read_text() == "A's segment",
                 what=f"recovery file on {node.name}")

    # B writes into its receive-only copy of A's recovery folder: it must stay local to B.
    (b.home / "trace/recovery/node1/forged.txt").write_text("B pretending to be A")
    b.client().scan(recovery_folder_id("node1"))
    wait_for(lambda: b.client().folder_status(recovery_folder_id("node1")).get("receiveOnlyChangedFiles", 0) >= 1,
             what="B to notice its local change in a receive-only folder")
    # A goes on publishing; once that reaches B and C, B's change had every chance to travel.
    (a.home / "trace/recovery/node1/seg2.txt").write_text("A again")
    for node in (b, c):
        wait_for(lambda: (node.home / "trace/recovery/node1/seg2.txt").exists(), what="A's second file")
    stays_false(lambda: (a.home / "trace/recovery/node1/forged.txt").exists()
                or (c.home / "trace/recovery/node1/forged.txt").exists(), seconds=3)

    for node in (a, b, c):
        st = node.status()
        assert st["syncthing_ok"] is True
        assert {p["name"]: p["connected"] for p in st["peers"]} == {
            n.name: True for n in (a, b, c) if n is not node}
        folders = {f["id"]: f for f in st["folders"]}
        assert folders["twinsync-frames"]["type"] == "sendreceive"
        assert folders[recovery_folder_id(node.name)]["type"] == "sendonly"
        for other in (a, b, c):
            if other is not node:
                assert folders[recovery_folder_id(other.name)]["type"] == "receiveonly"
