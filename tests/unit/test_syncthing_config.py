"""Finding a user's Syncthing and making a managed one loopback-only, on real config files."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET

import pytest

from syncthing import process
from syncthing.configxml import (LOOPBACK_OPTIONS, candidate_homes, find_config, make_loopback_only,
                                 read_gui_endpoint)
from syncthing.errors import SyncthingConfigError

CONFIG = """<configuration version="36">
  <device id="X" name="host"></device>
  <gui enabled="true" tls="{tls}"><address>{address}</address><apikey>{key}</apikey></gui>
  <options><listenAddress>default</listenAddress><globalAnnounceEnabled>true</globalAnnounceEnabled>
  <relaysEnabled>true</relaysEnabled></options>
</configuration>"""


def _write(path, address="127.0.0.1:8384", key="secret", tls="false"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CONFIG.format(address=address, key=key, tls=tls))
    return path


def test_find_config_follows_syncthings_own_order(tmp_path):
    """lib/locations unixConfigDir (1.27-2.1): a config.xml in the legacy ~/.config/syncthing
    wins over the newer ~/.local/state/syncthing; STHOMEDIR, else STCONFDIR, beats both."""
    home = tmp_path / "home"
    state = _write(home / ".local/state/syncthing/config.xml")
    assert find_config({}, home) == state
    legacy = _write(home / ".config/syncthing/config.xml")
    assert find_config({}, home) == legacy
    xdg = _write(tmp_path / "xdg-config/syncthing/config.xml")
    assert find_config({"XDG_CONFIG_HOME": str(tmp_path / "xdg-config")}, home) == xdg
    confdir = _write(tmp_path / "confdir/config.xml")
    assert find_config({"STCONFDIR": str(tmp_path / "confdir")}, home) == confdir
    explicit = _write(tmp_path / "explicit/config.xml")
    assert find_config({"STCONFDIR": str(tmp_path / "confdir"),
                        "STHOMEDIR": str(tmp_path / "explicit")}, home) == explicit


def test_xdg_state_home_counts_only_as_an_absolute_path(tmp_path):
    home = tmp_path / "home"
    state = _write(tmp_path / "xdg-state/syncthing/config.xml")
    assert find_config({"XDG_STATE_HOME": str(tmp_path / "xdg-state")}, home) == state
    assert candidate_homes({"XDG_STATE_HOME": "relative/state"}, home)[-1] == home / ".local/state/syncthing"


def test_an_explicit_directory_is_the_only_place_looked(tmp_path):
    """Syncthing started with STHOMEDIR never reads ~/.config; neither do we."""
    home = tmp_path / "home"
    _write(home / ".config/syncthing/config.xml")
    with pytest.raises(SyncthingConfigError, match="looked in .*nowhere\\)") as exc:
        find_config({"STHOMEDIR": str(tmp_path / "nowhere")}, home)
    assert ".config" not in str(exc.value)


def test_find_config_reads_the_real_home_and_environment(tmp_path, monkeypatch):
    for name in ("STHOMEDIR", "STCONFDIR", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    state = _write(tmp_path / ".local/state/syncthing/config.xml")
    assert find_config() == state
    assert read_gui_endpoint(find_config()).config_path == state


def test_find_config_names_where_it_looked(tmp_path):
    with pytest.raises(SyncthingConfigError, match="--managed") as exc:
        find_config({"XDG_STATE_HOME": str(tmp_path / "s")}, tmp_path)
    assert str(tmp_path / "s" / "syncthing") in str(exc.value)


@pytest.mark.parametrize("address, tls, url", [
    ("127.0.0.1:8384", "false", "http://127.0.0.1:8384"),
    ("0.0.0.0:8385", "false", "http://127.0.0.1:8385"),
    ("[::]:8386", "true", "https://127.0.0.1:8386"),
    ("http://127.0.0.1:9000", "false", "http://127.0.0.1:9000"),
])
def test_gui_endpoint(tmp_path, address, tls, url):
    ep = read_gui_endpoint(_write(tmp_path / "config.xml", address=address, tls=tls))
    assert (ep.url, ep.api_key, ep.is_loopback) == (url, "secret", True)


@pytest.mark.parametrize("address, key, message", [
    ("unix:///run/st.sock", "k", "TCP address"),
    ("127.0.0.1:8384", "", "no API key"),
])
def test_unusable_gui(tmp_path, address, key, message):
    with pytest.raises(SyncthingConfigError, match=message):
        read_gui_endpoint(_write(tmp_path / "config.xml", address=address, key=key))


def test_broken_xml_is_named(tmp_path):
    path = tmp_path / "config.xml"
    path.write_text("<configuration><gui>")
    with pytest.raises(SyncthingConfigError, match=str(path)):
        read_gui_endpoint(path)


def test_make_loopback_only_turns_off_everything_that_leaves_the_machine(tmp_path):
    path = _write(tmp_path / "config.xml", address="0.0.0.0:8384")
    make_loopback_only(path, device_name="alpha", gui_port=1234, listen_port=5678, api_key="k2")
    root = ET.parse(path).getroot()
    options = root.find("options")
    assert [e.text for e in options.findall("listenAddress")] == ["tcp://127.0.0.1:5678"]
    for name, value in LOOPBACK_OPTIONS.items():
        assert options.findtext(name) == value
    assert root.find("gui").findtext("address") == "127.0.0.1:1234"
    assert root.find("device").get("name") == "alpha"
    assert path.stat().st_mode & 0o077 == 0


def test_free_ports_are_never_ones_an_outgoing_connection_could_take(monkeypatch):
    """A port from the kernel's range for source ports could be taken by any HTTP client
    before Syncthing binds it (seen: "bind: address already in use"); picked ports stay
    below that range and are free, and one held by someone else is not picked."""
    low, _ = process._ephemeral_range()
    ports = {process.free_port() for _ in range(40)}
    assert all(process._LOWEST_PICKED <= port < low for port in ports)
    assert len(ports) > 30
    held = socket.socket()
    held.bind(("127.0.0.1", min(ports)))
    try:
        picks = iter([min(ports), max(ports)])  # the held one first
        monkeypatch.setattr(process.secrets, "choice", lambda seq: next(picks))
        assert process.free_port() == max(ports)
    finally:
        held.close()
