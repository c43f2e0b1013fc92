"""A light command loads only what it needs: every CLI call (a reasoning engine makes many)
pays for each library imported on the way, so the heavy ones stay behind the commands that
use them. tests/benchmarks/startup.py measures the time; this checks the cause."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from orchestrator import __version__
from orchestrator.metrics import read_fingerprints
from orchestrator.node import Node
from orchestrator.recovery import refresh_fingerprint

#: Libraries that cost tens of milliseconds each and that neither command below uses.
HEAVY = ("textual", "git", "apscheduler", "sqlite_utils", "watchdog", "pydantic", "rich", "paho", "websockets")
#: cryptography's PEM and SSH key formats (and the ciphers they bring): 25 ms that only
#: writing or loading the private key needs; checking a signature needs Ed25519 alone.
KEY_FORMATS = "cryptography.hazmat.primitives.serialization"


def _loaded_by(args: list[str], modules: tuple[str, ...] = HEAVY) -> list[str]:
    code = ("import json, sys\n"
            f"sys.argv = ['twinsync', *{args!r}]\n"
            "from orchestrator.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            f"print(json.dumps(sorted(m for m in {modules!r} if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [["--version"], ["status", "--json"]], ids=["version", "status-json"])
def test_light_commands_leave_heavy_libraries_unloaded(args, tmp_path):
    # A home that is not a node: `status` stops early, so this is only the first half.
    assert _loaded_by([*args, "--home", str(tmp_path / "nowhere")] if args[0] == "status" else args) == []


@pytest.mark.integration
def test_status_of_a_real_node_leaves_heavy_libraries_unloaded(node_factory):
    # With Syncthing answering `status` reads state.db, trace.db and the fingerprints too:
    # state.db once came through sqlite-utils (and its click and pluggy), +0.25 s a call.
    node = node_factory("light")
    assert _loaded_by(["status", "--json", "--home", str(node.home)]) == []


@pytest.mark.integration
def test_status_checks_signed_fingerprints_without_the_key_formats(node_factory):
    node = node_factory("signed")
    with Node.open(node.home) as opened:
        refresh_fingerprint(opened)
        assert [view.ok for view in read_fingerprints(opened)] == [True]  # a signature to check
    assert _loaded_by(["status", "--json", "--home", str(node.home)], (KEY_FORMATS,)) == []


def test_version_answers_before_typer_is_loaded():
    code = ("import sys\nsys.argv = ['twinsync', '--version']\nfrom orchestrator.cli import main\n"
            "main()\nprint('typer' in sys.modules, 'click' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"twinsync {__version__}", "False False"]


def test_version_loads_no_command_module():
    code = ("import sys\nsys.argv = ['twinsync', '--version']\nfrom orchestrator.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('orchestrator.cli.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
