"""The seed's topologies as real Syncthing configurations, and data going only where they allow."""

from __future__ import annotations

import json

import pytest

from tests.conftest import stays_false, wait_for

pytestmark = pytest.mark.integration


def _show(node) -> dict:
    return json.loads(node.cli("topology", "show", "--json").output)


def _shared(node) -> dict[str, list[str]]:
    return {f["id"]: f["shared_with"] for f in _show(node)["folders"]}


def test_star_shares_every_agent_folder_with_the_master_only(mesh):
    a, b, c = mesh(3)
    for node in (a, b, c):
        node.cli("topology", "apply", "star", "--master", "node1")
        node.cli("topology", "apply", "star", "--master", "node1")  # idempotent
    assert _shared(b) == {"twinsync-frames": ["node1"], "twinsync-modules": ["node1"],
                          "twinsync-recovery-node1": ["node1"], "twinsync-recovery-node2": ["node1"],
                          "twinsync-recovery-node3": ["node1"]}
    assert _shared(a)["twinsync-recovery-node2"] == ["node2", "node3"], "the master relays agents' traces"
    assert _show(c)["topology"] == {"kind": "star", "master": "node1", "namespaces": {}}
    (b.home / "frames.shared/hello.txt").write_text("via the master")
    wait_for(lambda: (c.home / "frames.shared/hello.txt").exists(), timeout=40, what="B's file on C via A")


def test_a_sharded_namespace_never_reaches_a_node_outside_its_owners(mesh):
    a, b, c = mesh(3)
    for node in (a, b, c):
        node.cli("topology", "apply", "sharded", "--map", "secret=node1,node2")
    assert _shared(a)["twinsync-frames-secret"] == ["node2"]
    assert "twinsync-frames-secret" not in _shared(c)
    a.cli("frame", "put", "secret/plan", "--body", '{"x": 1}')
    a.cli("frame", "put", "public/note", "--body", '{"x": 2}')
    wait_for(lambda: (b.home / "frames.shared/secret/plan.frame.json").exists(), timeout=40,
             what="the secret frame on its other owner")
    wait_for(lambda: (c.home / "frames.shared/public/note.frame.json").exists(), timeout=40,
             what="the public frame everywhere")
    stays_false(lambda: (c.home / "frames.shared/secret").exists(), seconds=3)


def test_bad_topologies_are_refused_with_one_sentence(mesh):
    a, _ = mesh(2)
    for args, message in [(("star",), "needs --master"), (("star", "--master", "nobody"), "needs --master"),
                          (("sharded",), "at least one namespace"), (("sharded", "--map", "x=ghost"), "unknown node"),
                          (("sharded", "--map", "novalue"), "must look like"), (("ring",), "Unknown topology")]:
        result = a.cli("topology", "apply", *args, ok=False)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
