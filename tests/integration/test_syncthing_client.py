"""The REST client and the managed process against a real `syncthing serve`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli.app import app
from syncthing.client import SyncthingClient
from syncthing.errors import SyncthingAPIError, SyncthingAuthError, SyncthingUnavailable
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
    assert json.loads(result.output)["config_path"] == str(st.config_path)


def test_init_names_the_config_xml_and_url_it_used(tmp_path, syncthing_factory):
    st = syncthing_factory("named")
    result = CliRunner().invoke(app, ["init", "--home", str(tmp_path / "node"), "--name", "named"],
                                env={"STHOMEDIR": str(st.home)})
    assert result.exit_code == 0, result.output
    assert f"  Syncthing: {st.endpoint.url} (config {st.config_path})\n" in result.output


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


class _TinyServer:
    """A real HTTP server on 127.0.0.1 that answers every request with the same raw bytes
    and then closes the connection (to play a Syncthing that dies mid-answer)."""

    def __init__(self, raw: bytes) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._raw = raw
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(self._raw)

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(5)


@pytest.mark.parametrize("raw, error, words", [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"40\r\n[{\"id\": 1, \"type\": \"DeviceConnected\"", SyncthingUnavailable, "broke off its answer",
                 id="closed-mid-chunk"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 15\r\nConnection: close\r\n\r\n"
                 b"<html>hi</html>", SyncthingAPIError, "not JSON", id="not-json"),
    pytest.param(b"garbage that is not HTTP at all\r\n\r\n", SyncthingUnavailable, "", id="not-http"),
])
def test_every_broken_answer_is_a_syncthing_error_with_one_sentence(raw, error, words):
    server = _TinyServer(raw)
    try:
        with SyncthingClient(server.url, "key") as client, pytest.raises(error) as caught:
            client.events(0, ["DeviceConnected"], timeout=1)
    finally:
        server.close()
    message = str(caught.value)
    assert words in message and server.url in message and "\n" not in message, message


def test_init_refuses_a_syncthing_url_that_is_not_http_with_one_sentence(tmp_path):
    """Through the installed command (its last-resort handler turned this into exit 70)."""
    done = subprocess.run([str(Path(sys.executable).with_name("twinsync")), "init", "--home", str(tmp_path / "n"),
                           "--name", "n", "--syncthing-url", "file:///etc/passwd", "--api-key", "k"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == ("Error: The Syncthing address 'file:///etc/passwd' is not an http:// or "
                                   "https:// URL with a host; pass one like http://127.0.0.1:8384.")
    assert list(tmp_path.iterdir()) == []


def test_the_api_key_never_goes_through_a_proxy_named_in_the_environment(syncthing_factory, monkeypatch):
    # requests honours HTTP_PROXY by default and bypasses it for 127.0.0.1 only when
    # NO_PROXY says so: a user with a proxy set would have sent every call, API key in its
    # header, to the proxy. The client talks to Syncthing directly, whatever the environment.
    st = syncthing_factory("a")
    proxy = socket.socket()
    proxy.bind(("127.0.0.1", 0))
    proxy.listen(8)
    proxy.settimeout(0.2)
    seen: list[bytes] = []

    def listen() -> None:
        while True:
            try:
                conn, _ = proxy.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(1)
                try:
                    seen.append(conn.recv(4096))
                except OSError:
                    seen.append(b"")

    threading.Thread(target=listen, daemon=True).start()
    address = f"http://127.0.0.1:{proxy.getsockname()[1]}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, address)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    try:
        client = st.client()
        assert client.version()["version"].startswith("v")
        assert client.events(0, ["ItemFinished"], timeout=0) is not None
    finally:
        proxy.close()
    assert seen == []
