"""Reasoning modules on real nodes: replicated by Syncthing, refused when tampered with or
forged, run on a node only after its person approves that exact version, from Git."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest
import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from folders.keys import load_private_key
from folders.module import MANIFEST_NAME, Manifest, collect_files
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

REASON = ("import json, sys\nrequest = json.load(sys.stdin)\n"
          "print(json.dumps({'steps': [{'kind': 'observation', 'content': 'read ' + request['goal']}],"
          " 'conclusion': %r}))\n")


def source(tmp_path: Path, name: str, body: str) -> Path:
    directory = tmp_path / "src" / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "reason.py").write_text(body)
    return directory


def modules_of(node) -> dict[str, dict]:
    return {m["name"]: m for m in json.loads(node.cli("modules", "--json").output)}


def state(node, name: str) -> str | None:
    return modules_of(node).get(name, {}).get("state")


def set_reasoner(node, **values) -> None:
    path = node.home / "twinsync.toml"
    doc = tomllib.loads(path.read_text())
    doc["reasoner"] = {**doc.get("reasoner", {}), **values}
    path.write_text(tomli_w.dumps(doc))


def answer(node, goal: str = "plan the week", *args: str, ok: bool = True):
    result = node.cli("trace", "reason", goal, "--json", *args, ok=ok)
    return json.loads(result.output) if result.exit_code in (0, 1) and result.output.startswith("{") else result


def test_a_module_runs_only_where_approved_and_only_as_signed(mesh, daemon_factory, tmp_path):
    a, b, c = mesh(3)
    for node in (a, b, c):
        set_reasoner(node, module="notes", timeout_s=20)
        daemon_factory(node)
    a.cli("module", "publish", str(source(tmp_path, "notes", REASON % "v1")), "--version", "1.0",
          "--entry", "reason.py", "--serves", "plans")
    assert state(a, "notes") == "running" and answer(a)["conclusion"] == "v1"

    # B and C are asked; neither runs it.
    for node in (b, c):
        wait_for(lambda node=node: state(node, "notes") == "awaiting approval", timeout=60, what=f"notes on {node.name}")
        refused = node.cli("trace", "reason", "plan the week", ok=False)
        assert refused.exit_code == 1 and "not approved on" in refused.output
    shown = json.loads(b.cli("module", "show", "notes", "--json").output)
    assert shown["subject"]["author"] == "node1" and list(shown["files"]) == ["reason.py"]

    # Approved on B: B runs it (and says so in its fingerprint), C still does not.
    b.cli("module", "approve", "notes")
    got = answer(b)
    assert (got["status"], got["conclusion"], got["reasoner"]) == ("published", "v1", "module notes 1.0")
    fingerprint = json.loads((b.home / "trace/recovery/node2/fingerprint.json").read_text())
    assert fingerprint["modules"] == ["notes 1.0"]
    assert c.cli("trace", "reason", "plan the week", ok=False).exit_code == 1

    # A new version: B sees the diff and runs the old one until it approves; an older
    # approval rolls back.
    a.cli("module", "publish", str(source(tmp_path, "notes", REASON % "v2")), "--version", "1.1",
          "--entry", "reason.py")
    wait_for(lambda: modules_of(b)["notes"]["awaiting"], timeout=60, what="notes 1.1 on node2")
    shown = json.loads(b.cli("module", "show", "notes", "--json").output)
    assert shown["changes"]["changed"] == ["reason.py"] and "+" in shown["diff"] and "'v2'" in shown["diff"]
    assert answer(b)["conclusion"] == "v1"
    b.cli("module", "approve", "notes")
    assert answer(b)["conclusion"] == "v2"
    b.cli("module", "approve", "notes", "--version", "1.0")
    assert answer(b)["conclusion"] == "v1"
    log = b.cli("module", "log", "notes").output
    assert "1.0" in log and "approved" in log and "superseded" in log

    # Tampered on B's disk: refused, and the approved version still runs from Git.
    module = b.home / "modules.shared" / "notes"
    good = (module / "reason.py").read_bytes()
    tampering = [
        ("file_mismatch", lambda: (module / "reason.py").write_text(REASON % "evil"),
         lambda: (module / "reason.py").write_bytes(good)),
        ("unlisted", lambda: (module / "extra.py").write_text("import os\n"), lambda: (module / "extra.py").unlink()),
        ("link", lambda: os.symlink("/etc/passwd", module / "passwd"), lambda: (module / "passwd").unlink()),
    ]
    for code, spoil, mend in tampering:
        spoil()
        wait_for(lambda: state(b, "notes") == f"refused ({code})", timeout=30, what=f"{code} refused on node2")
        assert answer(b)["conclusion"] == "v1", code
        mend()
        wait_for(lambda: not modules_of(b)["notes"]["refused"], timeout=30, what=f"{code} mended on node2")

    # Forged modules are refused everywhere: a stranger's key, or node1 claiming to be node2.
    forge(a.home / "modules.shared", "stranger", "stranger", Ed25519PrivateKey.generate())
    forge(a.home / "modules.shared", "claims", "node2", load_private_key(a.home / "keys/node.key"))
    for node in (a, b, c):
        wait_for(lambda node=node: (state(node, "stranger"), state(node, "claims"))
                 == ("refused (untrusted_author)", "refused (wrong_author)"), timeout=60,
                 what=f"forged modules refused on {node.name}")
        assert c.cli("module", "approve", "claims", ok=False).exit_code == 1


def forge(root: Path, name: str, author: str, key: Ed25519PrivateKey) -> None:
    directory = root / name
    directory.mkdir()
    (directory / "reason.py").write_text(REASON % "forged")
    manifest = Manifest.create(name=name, version="1", author=author, entry="reason.py", serves=[],
                               files=collect_files(directory), key=key)
    (directory / MANIFEST_NAME).write_bytes(manifest.to_bytes())


def test_a_module_that_hangs_eats_memory_or_crashes_leaves_a_shadow_and_the_daemon_runs(
        node_factory, daemon_factory, tmp_path):
    node = node_factory("solo")
    set_reasoner(node, timeout_s=20, memory_mb=256)
    daemon = daemon_factory(node)
    bodies = {"loop": "while True:\n    pass\n", "hog": "x = bytearray(1024 * 1024 * 1024)\n",
              "crash": "import sys\nsys.exit(3)\n", "babble": "print('no json here')\n"}
    for name, body in bodies.items():
        node.cli("module", "publish", str(source(tmp_path, name, body)), "--version", "1", "--entry", "reason.py")
    expected = {"loop": ("timeout", "longer than its limit of 2 s"), "hog": ("memory", "memory limit of 256 MB"),
                "crash": ("crashed", "exited with status 3"), "babble": ("garbage", "not one JSON object")}
    for name, (outcome, words) in expected.items():
        got = answer(node, f"goal for {name}", "--module", name, "--timeout", "2", ok=False)
        assert (got["status"], got["outcome"], got["conclusion"]) == ("shadow", outcome, None), got
        assert words in got["reason"] and got["reasoner"] == f"module {name} 1"
        shown = json.loads(node.cli("trace", "show", got["session"], "--json").output)
        assert shown["steps"][-1]["content"].endswith(got["reason"])
        assert any(p["code"] == "no_conclusion" for p in shown["problems"]), "a shadow is never published"
    assert daemon.proc.poll() is None
    assert node.status()["daemon"]["state"] == "running"
