"""Bad input gets one plain sentence, a non-zero exit, no traceback and nothing half-made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from syncthing.process import free_port
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def _assert_user_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: ") or "\nError: " in result.output, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_init_refuses_a_syncthing_that_is_down(tmp_path):
    home = tmp_path / "n"
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli("init", "--home", home, "--name", "n", "--syncthing-url", url, "--api-key", "k", ok=False)
    _assert_user_error(result, f"Nothing answers at {url}")
    assert not home.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_init_refuses_a_wrong_api_key_and_leaves_syncthing_untouched(tmp_path, syncthing_factory):
    st = syncthing_factory("s")
    home = tmp_path / "n"
    result = run_cli("init", "--home", home, "--name", "n", "--syncthing-url", st.endpoint.url,
                     "--api-key", "wrong", ok=False)
    _assert_user_error(result, "refused the API key", "--api-key")
    assert not home.exists()
    assert st.client().folders() == []


def test_init_refuses_a_folder_id_that_belongs_to_another_home(tmp_path, node_factory):
    first = node_factory("same")
    before = first.client().folders()
    home = tmp_path / "second"
    ep = first.syncthing.endpoint
    result = run_cli("init", "--home", home, "--name", "same", "--syncthing-url", ep.url,
                     "--api-key", ep.api_key, ok=False)
    _assert_user_error(result, "twinsync-frames", str(first.home / "frames.shared"))
    assert not home.exists()
    assert first.client().folders() == before


def test_init_on_an_existing_home_changes_nothing(node_factory):
    node = node_factory("n1")
    before = _tree(node.home)
    ep = node.syncthing.endpoint
    result = node.cli("init", "--name", "other", "--syncthing-url", ep.url, "--api-key", ep.api_key, ok=False)
    _assert_user_error(result, "already a twinsync node home", "nothing was changed")
    assert _tree(node.home) == before


@pytest.mark.parametrize("name", ["my laptop", "a/b", "../x", "", "-x", "é"])
def test_init_refuses_bad_names(tmp_path, name):
    result = run_cli("init", "--home", tmp_path / "n", "--name", name, "--managed", ok=False)
    _assert_user_error(result, "is not allowed", "no spaces or slashes")
    assert not (tmp_path / "n").exists()


def test_init_echoes_a_5000_character_name_cut(tmp_path):
    result = run_cli("init", "--home", tmp_path / "n", "--name", "x" * 5000, "--managed", ok=False)
    _assert_user_error(result, "is not allowed", "(5000 characters)")
    assert len(result.output) < 400, len(result.output)


def test_init_refuses_an_unwritable_home(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_cli("init", "--home", blocker / "home", "--name", "n", "--managed", ok=False)
    _assert_user_error(result, "Cannot create", "--home")
    result = run_cli("init", "--home", "/proc/twinsync/home", "--name", "n", "--managed", ok=False)
    _assert_user_error(result, "/proc/twinsync", "--home")


def test_pair_refuses_bad_codes_and_writes_nothing(node_factory):
    a, b = node_factory("a"), node_factory("b")
    code_b = b.cli("invite").output.strip()
    code_a = a.cli("invite").output.strip()
    trusted = (a.home / "trusted.toml").read_bytes()
    devices = a.client().devices()
    prefix, body, checksum = code_b.split(".")
    altered = body[:10] + ("A" if body[10] != "A" else "B") + body[11:]
    cases = {
        code_b[:-5]: "truncated or altered",
        f"{prefix}.{altered}.{checksum}": "truncated or altered",
        "hello": "not a twinsync invite code",
        code_a: "this node's own invite code",
    }
    for code, message in cases.items():
        _assert_user_error(a.cli("pair", code, ok=False), message)
    assert (a.home / "trusted.toml").read_bytes() == trusted
    assert a.client().devices() == devices


def test_commands_on_a_missing_home_and_a_bad_config(tmp_path, node_factory):
    _assert_user_error(run_cli("status", "--home", tmp_path / "nowhere", ok=False),
                       f"No twinsync node at {tmp_path / 'nowhere'}", "twinsync init --name NAME")
    node = node_factory("n")
    config = node.home / "twinsync.toml"
    config.write_text(config.read_text().replace('url = "http://', 'url = "ftp://'))
    _assert_user_error(node.cli("status", ok=False), "syncthing.url", str(config))


def test_status_reports_a_stopped_syncthing_and_exits_1(node_factory):
    node = node_factory("n")
    node.syncthing.stop()
    result = node.cli("status", "--json", ok=False)
    assert result.exit_code == 1
    st = json.loads(result.output)
    assert st["syncthing_ok"] is False
    assert "Nothing answers at" in st["syncthing_error"]
    doctor = node.cli("doctor", ok=False)
    assert doctor.exit_code == 1
    assert "fail Syncthing API" in doctor.output


def test_real_entry_point_prints_one_line_without_traceback(tmp_path):
    env = {**os.environ, "TWINSYNC_HOME": str(tmp_path / "none")}
    done = subprocess.run([str(Path(sys.executable).with_name("twinsync")), "peers"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"Error: No twinsync node at {tmp_path / 'none'}; run `twinsync init --name NAME` first "
        "(or pass --home)."]


def test_doctor_reports_a_broken_trusted_file_as_one_failed_check(node_factory):
    node = node_factory("n")
    (node.home / "trusted.toml").write_text("[peers.x\n")
    result = node.cli("doctor", ok=False)
    assert result.exit_code == 1
    assert "fail trusted peers: Cannot read" in result.output
    assert "ok   signing key" in result.output, "the other checks still run"


def test_doctor_reports_a_broken_config_and_still_checks_the_programs(node_factory):
    node = node_factory("n")
    (node.home / "twinsync.toml").write_text("[node\n")
    result = node.cli("doctor", ok=False)
    assert result.exit_code == 1
    assert "fail node home: Cannot read" in result.output
    assert "ok   git:" in result.output and "Traceback" not in result.output


def test_a_node_renamed_to_a_peers_name_fails_doctor_and_publishes_nothing(node_factory):
    """Finding 7: `[node] name` changed to another node's name went unnoticed; `trace publish`
    then signed segments as that node (exit 0)."""
    from tests.conftest import pair_mesh
    a, b = node_factory("a"), node_factory("b")
    pair_mesh([a, b])
    assert "ok   node name: a is this node's own name" in a.cli("doctor", ok=False).output
    session = a.cli("trace", "start", "plan").output.strip()
    a.cli("trace", "finish", session, "done")
    config = a.home / "twinsync.toml"
    config.write_text(config.read_text().replace('name = "a"', 'name = "b"'))

    doctor = a.cli("doctor", ok=False)
    assert doctor.exit_code == 1 and "Traceback" not in doctor.output
    assert f"fail node name: node.name in {config} is 'b', but" in doctor.output
    assert "set node.name in" in doctor.output
    _assert_user_error(a.cli("trace", "publish", ok=False), "is 'b'", "another key",
                       "set node.name back to this node's own name")
    assert not (a.home / "trace/recovery/b/segments").exists() or not any(
        (a.home / "trace/recovery/b/segments").iterdir())
    _assert_user_error(a.cli("frame", "put", "notes/x", "--body", "{}", ok=False), "another key")
    assert not (a.home / "frames.shared/notes").exists()


def test_doctor_names_a_missing_modules_folder_and_pairing_again_restores_it(mesh):
    """A home made before modules existed has no twinsync-modules folder: doctor says so,
    and the repair it names (pair again) makes it."""
    a, b = mesh(2)
    assert "ok   folder twinsync-modules: sendreceive, shared with 1 peer(s)" in a.cli("doctor", ok=False).output
    a.client().delete_folder("twinsync-modules")
    doctor = a.cli("doctor", ok=False)
    assert doctor.exit_code == 1
    assert "fail folder twinsync-modules: missing in Syncthing  → pair again with the peer's invite code" \
        in doctor.output
    a.cli("pair", b.cli("invite").output.strip(), ok=False)
    assert "ok   folder twinsync-modules" in a.cli("doctor", ok=False).output
