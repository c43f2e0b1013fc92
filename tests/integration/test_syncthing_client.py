"""The REST client and the managed process against a real `syncthing serve`."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from syncthing.client import SyncthingClient
from syncthing.errors import SyncthingAPIError, SyncthingAuthError
from syncthing.folderspec import frames_folder, with_device
from tests.conftest import run_cli, wait_for

pytestmark = pytest.mark.integration


def test_client_reads_and_changes_one_folder_without_touching_others(tmp_path, syncthing_factory):
    st = syncthing_factory("a")
    client = st.client()
    me = client.my_device_id()
    assert client.ping() and client.version()["version"].startswith("v")
    assert client.options()["listenAddresses"][0].startswith("tcp://127.0.0.1:")
    assert client.folder("twinsync-frames") is None

    users = {"id": "users-own", "path": str(tmp_path / "own"), "devices": [{"deviceID": me}]}
    client.put_folder(users)
    client.put_folder(frames_folder(tmp_path / "frames", [me]))
    frames = client.folder("twinsync-frames")
    assert (frames["maxConflicts"], frames["fsWatcherEnabled"], frames["type"]) == (-1, True, "sendreceive")
    client.patch_folder("twinsync-frames", {"devices": with_device(frames, me)})
    assert client.folder("users-own")["path"] == str(tmp_path / "own")
    assert sorted(f["id"] for f in client.folders()) == ["twinsync-frames", "users-own"]

    # Syncthing creates a filtered subscription on its first use: ask once before the change.
    wanted = ["LocalIndexUpdated"]
    since = max((e["id"] for e in client.events(since=0, events=wanted, timeout=1)), default=0)
    (tmp_path / "frames" / "x.txt").write_text("x")
    client.scan("twinsync-frames", subs=["x.txt"])
    wait_for(lambda: client.folder_status("twinsync-frames")["localFiles"] == 1, what="scanned file")
    started = time.monotonic()
    events = client.events(since=since, events=wanted, timeout=10)
    assert time.monotonic() - started < 9, "long-poll should return as soon as an event exists"
    assert {e["type"] for e in events} == {"LocalIndexUpdated"}
    assert client.completion("twinsync-frames")["completion"] == 100

    with pytest.raises(SyncthingAPIError, match="404|no such folder|not found"):
        client.folder_status("no-such-folder")
    with SyncthingClient(st.endpoint.url, "wrong") as bad, pytest.raises(SyncthingAuthError):
        bad.ping()
    client.close()


def test_init_finds_a_running_syncthing_through_its_config_xml(tmp_path, syncthing_factory):
    st = syncthing_factory("found")
    home = tmp_path / "node"
    result = CliRunner().invoke(app, ["init", "--home", str(home), "--name", "found", "--json"],
                                env={"STHOMEDIR": str(st.home)})
    assert result.exit_code == 0, result.output
    assert '"syncthing_url": "%s"' % st.endpoint.url in result.output
    assert st.client().folder("twinsync-frames")["path"] == str(home / "frames.shared")


def test_managed_init_leaves_a_running_syncthing_that_stop_ends(tmp_path):
    home = tmp_path / "m"
    run_cli("init", "--home", home, "--name", "m", "--managed")
    try:
        assert '"syncthing_ok": true' in run_cli("status", "--home", home, "--json").output
        assert (home / "syncthing" / "config.xml").stat().st_mode & 0o077 == 0
        assert "already running" in run_cli("syncthing", "start", "--home", home).output
    finally:
        assert run_cli("syncthing", "stop", "--home", home).output.strip() == "Syncthing stopped."
    assert run_cli("status", "--home", home, ok=False).exit_code == 1
