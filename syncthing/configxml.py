"""Syncthing's own config.xml: finding a running user's API address and key, and making a
fresh managed home loopback-only before its first start (so it never phones home)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from syncthing.errors import SyncthingConfigError

#: Options that keep a managed Syncthing on loopback: no discovery, relays, NAT, usage or
#: crash reporting, upgrades or browser. Applied before the first start.
LOOPBACK_OPTIONS = {
    "globalAnnounceEnabled": "false",
    "localAnnounceEnabled": "false",
    "relaysEnabled": "false",
    "natEnabled": "false",
    "urAccepted": "-1",
    "crashReportingEnabled": "false",
    "autoUpgradeIntervalH": "0",
    "startBrowser": "false",
    "announceLANAddresses": "false",
    "stunKeepaliveStartS": "0",
    "reconnectionIntervalS": "5",
}


@dataclass(frozen=True)
class GuiEndpoint:
    """Where a Syncthing's REST API answers and the key it expects."""

    url: str
    api_key: str
    config_path: Path

    @property
    def https_cert(self) -> Path | None:
        """Syncthing's own GUI certificate (lib/locations: `${config}/https-cert.pem`, next to
        config.xml in every version), the only one trusted for this GUI; None while it does
        not exist (Syncthing writes it on its first start with the GUI on HTTPS)."""
        cert = self.config_path.parent / "https-cert.pem"
        return cert if cert.is_file() else None

    @property
    def is_loopback(self) -> bool:
        host = self.url.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")
        return host in ("127.0.0.1", "localhost", "::1")


def candidate_homes(env: Mapping[str, str] | None = None, user_home: Path | None = None) -> list[Path]:
    """Where Syncthing looks for config.xml, in its own order; the first one holding a
    config.xml is the one Syncthing uses.

    From lib/locations (1.27 to 2.1, `unixConfigDir`) and the `--home`/`--config` flags with
    their variables: STHOMEDIR, else STCONFDIR, is the only place; otherwise
    $XDG_CONFIG_HOME/syncthing or ~/.config/syncthing when a config.xml exists there (1.19
    knew only these), else $XDG_STATE_HOME/syncthing (an absolute path) or
    ~/.local/state/syncthing.
    """
    env = os.environ if env is None else env
    user_home = user_home or Path.home()
    for variable in ("STHOMEDIR", "STCONFDIR"):
        if env.get(variable):
            return [Path(env[variable]).expanduser()]
    homes = []
    if env.get("XDG_CONFIG_HOME"):
        homes.append(Path(env["XDG_CONFIG_HOME"]) / "syncthing")
    homes.append(user_home / ".config/syncthing")
    state = env.get("XDG_STATE_HOME", "")
    homes.append((Path(state) if os.path.isabs(state) else user_home / ".local/state") / "syncthing")
    return list(dict.fromkeys(homes))


def find_config(env: Mapping[str, str] | None = None, user_home: Path | None = None) -> Path:
    """The config.xml the user's Syncthing reads (see `candidate_homes`)."""
    homes = candidate_homes(env, user_home)
    for home in homes:
        if (home / "config.xml").is_file():
            return home / "config.xml"
    looked = ", ".join(str(h) for h in homes)
    raise SyncthingConfigError(
        f"No Syncthing config.xml found (looked in {looked}); start Syncthing once, pass "
        "--syncthing-url and --api-key, or use --managed to let twinsync run its own.")


def _parse(path: Path) -> ET.ElementTree:
    try:
        return ET.parse(path)
    except (OSError, ET.ParseError) as exc:
        raise SyncthingConfigError(f"Cannot read Syncthing's {path} ({exc}); "
                                   "fix the file, or let Syncthing write it again.") from None


def read_gui_endpoint(path: Path) -> GuiEndpoint:
    """The API URL and key from a config.xml; a wildcard bind address is reached on loopback."""
    gui = _parse(path).getroot().find("gui")
    address = gui.findtext("address", "").strip() if gui is not None else ""
    api_key = gui.findtext("apikey", "").strip() if gui is not None else ""
    if not address or address.startswith(("unix://", "/")):
        raise SyncthingConfigError(f"Syncthing's GUI in {path} does not listen on a TCP address; "
                                   "set one in its GUI settings.")
    if not api_key:
        raise SyncthingConfigError(f"Syncthing's {path} has no API key; generate one in its GUI "
                                   "(Actions → Settings → API Key) and try again.")
    scheme = "https" if gui.get("tls", "false").lower() == "true" else "http"
    address = address.split("://", 1)[-1]
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return GuiEndpoint(f"{scheme}://{host}:{port}", api_key, path)


def make_loopback_only(path: Path, *, device_name: str, gui_port: int, listen_port: int,
                       api_key: str) -> None:
    """Rewrite a freshly generated config.xml so its first start stays on 127.0.0.1."""
    tree = _parse(path)
    root = tree.getroot()
    own = root.find("device")
    if own is not None:
        own.set("name", device_name)
    gui = root.find("gui")
    gui.set("tls", "false")
    _set_child(gui, "address", f"127.0.0.1:{gui_port}")
    _set_child(gui, "apikey", api_key)
    options = root.find("options")
    for listen in options.findall("listenAddress"):
        options.remove(listen)
    ET.SubElement(options, "listenAddress").text = f"tcp://127.0.0.1:{listen_port}"
    for name, value in LOOPBACK_OPTIONS.items():
        _set_child(options, name, value)
    tree.write(path, encoding="unicode")
    os.chmod(path, 0o600)


def _set_child(parent: ET.Element, tag: str, text: str) -> None:
    child = parent.find(tag)
    if child is None:
        child = ET.SubElement(parent, tag)
    child.text = text
