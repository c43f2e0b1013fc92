"""What differs between the Syncthings users run, against real processes and real sockets:
a regenerated API key, a hung Syncthing, 2.x's migration server, an HTTPS GUI."""

from __future__ import annotations

import datetime
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from orchestrator.cli.app import app
from syncthing.client import SyncthingClient
from syncthing.errors import SyncthingBusyError
from syncthing.process import ManagedSyncthing, binary_version
from tests.conftest import run_cli, wait_for
from tests.unit.test_syncthing_migration import MIGRATION_BODY

pytestmark = pytest.mark.integration


def cli(*args, env: dict[str, str]):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def set_gui(st: ManagedSyncthing, **changes) -> None:
    """What a user does in Syncthing's GUI settings, through the same REST call."""
    ep = st.endpoint
    try:
        r = requests.patch(ep.url + "/rest/config/gui", json=changes, headers={"X-API-Key": ep.api_key},
                           verify=str(ep.https_cert) if ep.https_cert else True, timeout=10)
    except requests.ConnectionError:
        return  # Syncthing restarted its GUI server before answering; every caller waits for the effect
    r.raise_for_status()


def _answers(st: ManagedSyncthing) -> bool:
    """Syncthing restarts its GUI server after a GUI setting changes; true once it is back
    (asked as twinsync asks: its own certificate pinned, no host name check)."""
    try:
        with st.client() as client:
            return client.ping()
    except Exception:  # noqa: BLE001 - not answering yet, whatever the reason
        return False


def _serves(st: ManagedSyncthing) -> bool:
    """The GUI server is back, whatever it says to our (possibly stale) key."""
    ep = st.endpoint
    try:
        requests.get(ep.url + "/rest/system/ping", verify=False, timeout=2)
        return True
    except requests.RequestException:
        return False


# -- item 7: a regenerated API key ------------------------------------------------------

def test_a_regenerated_api_key_is_read_again_from_config_xml_and_saved(node_factory):
    node = node_factory("a")
    set_gui(node.syncthing, apiKey="regenerated-key-0123456789")
    wait_for(lambda: node.syncthing.endpoint.api_key == "regenerated-key-0123456789", 10, "config.xml")
    wait_for(lambda: _answers(node.syncthing), 10, "Syncthing's GUI back after the change")
    result = cli("status", "--home", node.home, "--json", env={"STHOMEDIR": str(node.syncthing.home)})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["syncthing_ok"] is True
    assert (f"Syncthing's API key changed; twinsync read the new one from {node.syncthing.config_path} "
            "and saved it in") in result.stderr
    assert (node.home / "keys/syncthing-api.key").read_text().strip() == "regenerated-key-0123456789"
    again = cli("status", "--home", node.home, env={"STHOMEDIR": str(node.syncthing.home)})
    assert again.exit_code == 0 and "API key changed" not in again.output  # said once


def test_a_wrong_key_with_no_config_xml_names_no_flag_the_command_lacks(tmp_path, node_factory):
    node = node_factory("b")
    set_gui(node.syncthing, apiKey="regenerated-key-0123456789")
    wait_for(lambda: node.syncthing.endpoint.api_key == "regenerated-key-0123456789", 10, "config.xml")
    wait_for(lambda: _serves(node.syncthing), 10, "Syncthing's GUI back after the change")
    elsewhere = {"STHOMEDIR": str(tmp_path / "no-syncthing-here")}
    status = cli("status", "--home", node.home, "--json", env=elsewhere)
    assert status.exit_code == 1
    error = json.loads(status.stdout)["syncthing_error"]
    assert "refused the API key" in error and f"write it into {node.home}" in error
    assert "--api-key" not in error
    peers = cli("peers", "--home", node.home, env=elsewhere)
    assert peers.exit_code == 1
    assert "refused the API key" in peers.stderr and "does not answer" not in peers.output
    doctor = cli("doctor", "--home", node.home, env=elsewhere)
    assert doctor.exit_code == 1 and "--api-key" not in doctor.output


# -- item 8: running but not answering --------------------------------------------------

@pytest.fixture
def hung_port():
    """A real TCP port on 127.0.0.1 that accepts connections (the kernel's backlog does) and
    never answers."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    yield sock
    sock.close()


def test_status_and_doctor_say_a_hung_syncthing_runs_but_does_not_answer(node_factory, hung_port):
    node = node_factory("h")
    port = int(node.syncthing.endpoint.url.rsplit(":", 1)[1])
    node.syncthing.stop()
    hung_port.bind(("127.0.0.1", port))
    hung_port.listen(16)
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    status = run_cli("status", "--home", node.home, "--json", ok=False)
    took = time.monotonic() - started
    assert status.exit_code == 1
    assert f"Syncthing at {url} is running but not answering" in json.loads(status.stdout)["syncthing_error"]
    assert took < 8, f"status took {took:.1f} s"
    started = time.monotonic()
    doctor = run_cli("doctor", "--home", node.home, ok=False)
    took = time.monotonic() - started
    assert "running but not answering" in doctor.output and "start Syncthing" not in doctor.output
    assert took < 4.5, f"doctor waited {took:.1f} s: the hung API was asked twice"
    peers = run_cli("peers", "--home", node.home, ok=False)
    assert peers.exit_code == 1 and "running but not answering" in peers.output


# -- item 2: 2.x's database migration ---------------------------------------------------

class MigratingSyncthing:
    """A real HTTP server that answers like Syncthing 2.x's migration server (every path, 200,
    text/plain banner, no authentication) until `finish()`, then like the API's ping."""

    def __init__(self) -> None:
        self.done = threading.Event()
        done = self.done

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body, kind = ((b'{"ping": "pong"}', "application/json") if done.is_set()
                              else (MIGRATION_BODY, "text/plain; charset=utf-8"))
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def migrating():
    server = MigratingSyncthing()
    yield server
    server.close()


def test_the_client_raises_busy_for_the_migration_server(migrating):
    with SyncthingClient(f"http://127.0.0.1:{migrating.port}", "any") as client:
        for call in (client.ping, client.version, client.folders):
            with pytest.raises(SyncthingBusyError) as caught:
                call()
            assert "busy migrating its database; wait for it to finish" in str(caught.value)


def test_an_https_gui_migrating_without_tls_is_busy_not_a_certificate_problem(migrating):
    """The migration server listens without TLS even when the GUI is HTTPS."""
    with SyncthingClient(f"https://127.0.0.1:{migrating.port}", "any") as client, \
            pytest.raises(SyncthingBusyError, match="busy migrating its database"):
        client.ping()


def test_a_managed_start_waits_through_a_migration_instead_of_giving_up(tmp_path, migrating):
    home = tmp_path / "st"
    home.mkdir()
    (home / "config.xml").write_text(f"<configuration><gui tls='false'><address>127.0.0.1:{migrating.port}"
                                     "</address><apikey>k</apikey></gui></configuration>")
    heard: list[str] = []

    def on_busy(message: str) -> None:
        heard.append(message)
        threading.Timer(1.0, migrating.done.set).start()  # the migration ends after the first deadline

    started = time.monotonic()
    ManagedSyncthing(home).wait_ready(0.3, migration_timeout=30, on_busy=on_busy)
    assert time.monotonic() - started >= 1.0
    assert len(heard) == 1 and "busy migrating its database" in heard[0]


def test_a_migration_longer_than_its_deadline_is_named(tmp_path, migrating):
    home = tmp_path / "st"
    home.mkdir()
    (home / "config.xml").write_text(f"<configuration><gui><address>127.0.0.1:{migrating.port}"
                                     "</address><apikey>k</apikey></gui></configuration>")
    with pytest.raises(Exception, match="did not finish migrating its database within 1 s"):
        ManagedSyncthing(home).wait_ready(0.2, migration_timeout=1)


# -- item 6: an HTTPS GUI ---------------------------------------------------------------

def turn_on_https(st: ManagedSyncthing) -> None:
    set_gui(st, useTLS=True)
    wait_for(lambda: st.endpoint.url.startswith("https://") and st.endpoint.https_cert, 10, "tls in config.xml")
    wait_for(lambda: _answers(st), 20, "Syncthing's GUI on https")


def test_init_attaches_to_an_https_gui_with_no_flags(tmp_path, syncthing_factory):
    st = syncthing_factory("tls")
    turn_on_https(st)
    result = cli("init", "--home", tmp_path / "node", "--name", "tls", "--json", env={"STHOMEDIR": str(st.home)})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["syncthing_url"].startswith("https://127.0.0.1:")


def test_a_node_set_up_over_http_follows_syncthings_redirect_to_https(node_factory):
    node = node_factory("r")
    assert node.status()["syncthing_url"].startswith("http://")
    turn_on_https(node.syncthing)
    result = cli("status", "--home", node.home, "--json", env={"STHOMEDIR": str(node.syncthing.home)})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["syncthing_ok"] is True


def test_a_certificate_that_is_not_syncthings_own_is_refused_with_a_sentence(tmp_path, syncthing_factory):
    st = syncthing_factory("pin")
    turn_on_https(st)
    cert = st.endpoint.https_cert
    cert.write_bytes(_self_signed_pem())  # not the one Syncthing serves
    result = cli("init", "--home", tmp_path / "node", "--name", "pin", env={"STHOMEDIR": str(st.home)})
    assert result.exit_code == 1
    assert f"presented a certificate that is not the one in {cert}" in result.output
    assert "Traceback" not in result.output


def _self_signed_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syncthing")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


# -- doctor: which Syncthing, which config, HTTPS -----------------------------------------

def test_doctor_reports_version_config_and_https(node_factory):
    node = node_factory("d")
    env = {"STHOMEDIR": str(node.syncthing.home)}
    checks = {c["name"]: c for c in json.loads(cli("doctor", "--home", node.home, "--json", env=env).stdout)}
    version = str(binary_version())
    assert checks["Syncthing version"]["message"].startswith(version)
    assert checks["Syncthing version"]["level"] == ("ok" if binary_version().tested else "warn")
    assert checks["Syncthing config"] == {"name": "Syncthing config", "level": "ok",
                                          "message": str(node.syncthing.config_path), "fix": ""}
    assert checks["Syncthing HTTPS"]["message"].startswith("plain HTTP on loopback")
    turn_on_https(node.syncthing)
    checks = {c["name"]: c for c in json.loads(cli("doctor", "--home", node.home, "--json", env=env).stdout)}
    assert checks["Syncthing HTTPS"]["message"] == f"HTTPS, certificate pinned to {node.syncthing.home / 'https-cert.pem'}"
    elsewhere = {"STHOMEDIR": str(node.home / "nowhere")}
    checks = {c["name"]: c for c in json.loads(cli("doctor", "--home", node.home, "--json", env=elsewhere).stdout)}
    assert checks["Syncthing config"]["level"] == "warn"


def test_the_daemon_picks_up_a_regenerated_key_and_logs_it(node_factory, daemon_factory, monkeypatch):
    node = node_factory("k")
    monkeypatch.setenv("STHOMEDIR", str(node.syncthing.home))  # where the daemon finds config.xml
    daemon = daemon_factory(node)
    set_gui(node.syncthing, apiKey="regenerated-key-0123456789")
    wait_for(lambda: node.syncthing.endpoint.api_key == "regenerated-key-0123456789", 10, "config.xml")
    node.cli("frame", "put", "notes/after", "--body", '{"v": 1}')  # the daemon scans: a REST call
    wait_for(lambda: "API key changed" in daemon.log(), 30, "the daemon to log the new key")
    assert (node.home / "keys/syncthing-api.key").read_text().strip() == "regenerated-key-0123456789"
    line = next(l for l in daemon.log().splitlines() if "API key changed" in l)
    assert "INFO" in line and "regenerated-key" not in daemon.log()  # the key itself is never logged
