"""A new user's first steps, through the real CLI: before `init`, every command (doctor and
the TUI included) says the same sentence and exits 1; a frame from a peer that is not in Git
yet says the daemon is not running, not that the frame has no history."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def _sentence(home) -> str:
    return f"No twinsync node at {home}; run `twinsync init --name NAME` first (or pass --home)."


@pytest.mark.parametrize("command", [["status"], ["peers"], ["nodes"], ["frame", "list"], ["tui"], ["conflicts"],
                                     ["forks"], ["snapshots"], ["invite"], ["topology", "show"],
                                     ["syncthing", "start"], ["trace", "publish"]])
def test_every_command_before_init_says_run_init(tmp_path, command):
    home = tmp_path / "nowhere"
    result = run_cli(*command, "--home", home, ok=False)
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"Error: {_sentence(home)}"
    assert not home.exists()


def test_doctor_before_init_says_run_init_not_restore_a_backup(tmp_path):
    home = tmp_path / "nowhere"
    result = run_cli("doctor", "--home", home, ok=False)
    assert result.exit_code == 1, result.output
    assert f"fail node home: No twinsync node at {home}  → run `twinsync init --name NAME` first " \
           "(or pass --home)" in result.output
    assert "backup" not in result.output
    assert "git" in result.output, "the program checks still run"


def test_frame_log_of_an_uncommitted_frame_names_the_stopped_daemon(node_factory):
    node = node_factory("n1")
    node.cli("frame", "put", "notes/draft", "--shadow", "--body", '{"text": "from a peer"}')
    # A valid frame that reached frames.shared/ the way a peer's does: not through `frame put`.
    target = node.home / "frames.shared" / "notes" / "draft.frame.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(node.home / "frames.local" / "notes" / "draft.frame.json", target)
    result = node.cli("frame", "log", "notes/draft", ok=False)
    assert result.exit_code == 1
    assert "no twinsync daemon runs" in result.output and "twinsync run" in result.output
    # An id that is nowhere is still a wrong id, daemon or not.
    assert "no history" in node.cli("frame", "log", "notes/missing", ok=False).output


def test_tui_with_a_broken_config_exits_1_with_the_sentence_before_starting(node_factory):
    node = node_factory("n1")
    config = node.home / "twinsync.toml"
    config.write_text(config.read_text().replace('url = "http://', 'url = "ftp://'))
    result = node.cli("tui", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith("Error: syncthing.url in") and str(config) in result.output
