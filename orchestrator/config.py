"""twinsync.toml: one typed settings object, loaded once and passed down.

The Syncthing API key is not in this file: it lives in keys/syncthing-api.key (0600), so
the config can be shown and shared without leaking it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import tomli_w

from folders.errors import KeyFileError, TwinsyncError
from folders.files import write_atomic
from folders.keys import is_private_file_safe
from folders.layout import NodeLayout, check_node_name
from folders.linkwire import parse_listen


class ConfigError(TwinsyncError):
    """twinsync.toml is unreadable or holds a bad value."""


@dataclass(frozen=True)
class FrameSettings:
    """How the daemon batches and judges frame changes ([frames] in twinsync.toml)."""

    max_size: int = 16 * 1024 * 1024
    quiet_ms: int = 200
    max_wait_ms: int = 1000
    reconcile_interval_s: int = 3600


@dataclass(frozen=True)
class TraceSettings:
    """When the daemon publishes, merges, snapshots and prunes ([traces] in twinsync.toml)."""

    publish_interval_s: int = 30
    merge_interval_s: int = 10
    snapshot_every_segments: int = 20
    snapshot_every_minutes: int = 60
    keep_snapshots: int = 3
    fingerprint_stale_s: int = 3600
    #: A peer whose next segment is missing for longer than this is a warning in `nodes`.
    gap_warning_s: int = 600


@dataclass(frozen=True)
class MqttSettings:
    """Where the daemon publishes node status, metrics and new conflicts ([mqtt]); off while
    `host` is empty. Only loopback by default: a remote broker is the user's explicit choice."""

    host: str = ""
    port: int = 1883
    prefix: str = "twinsync"


@dataclass(frozen=True)
class AlertSettings:
    """Which alerts the daemon raises and where it sends them ([alerts]). Desktop
    notifications need a desktop session and `notify-send`; MQTT needs [mqtt] host. Stale
    fingerprints are off by default: a laptop that sleeps makes one every night."""

    desktop: bool = True
    mqtt: bool = True
    queue: bool = True
    peers: bool = True
    pieces: bool = True
    daemon: bool = True
    fingerprints: bool = False
    peer_disconnected_after_s: int = 600
    interval_s: int = 15


@dataclass(frozen=True)
class ReasonerSettings:
    """What answers a goal on this node ([reasoner]): `command` (a program and its arguments)
    or `module` (the name of a module approved on this node); off while both are empty. The
    limits apply to every run (orchestrator/sandbox.py)."""

    command: tuple = ()
    module: str = ""
    timeout_s: int = 30
    memory_mb: int = 512


@dataclass(frozen=True)
class LinkSettings:
    """The peer link ([link], orchestrator/link.py): where the daemon listens (empty: no
    link), and how old the last merge may be for this node's own consensus to answer an
    `ask` without asking the peers. When the port is taken (two nodes on one machine) the
    daemon takes a free one; peers read it from the node's signed fingerprint."""

    listen: str = "0.0.0.0:22100"
    fresh_s: int = 60
    timeout_ms: int = 2000


#: The optional tables of twinsync.toml, each with its settings class.
SECTIONS = {"frames": FrameSettings, "traces": TraceSettings, "mqtt": MqttSettings, "alerts": AlertSettings,
            "reasoner": ReasonerSettings, "link": LinkSettings}


@dataclass(frozen=True)
class NodeConfig:
    name: str
    device_id: str
    syncthing_url: str
    managed: bool = False
    frames: FrameSettings = FrameSettings()
    traces: TraceSettings = TraceSettings()
    mqtt: MqttSettings = MqttSettings()
    alerts: AlertSettings = AlertSettings()
    reasoner: ReasonerSettings = ReasonerSettings()
    link: LinkSettings = LinkSettings()

    def to_toml(self) -> bytes:
        doc = {"node": {"name": self.name, "device_id": self.device_id},
               "syncthing": {"url": self.syncthing_url, "managed": self.managed},
               **{name: asdict(getattr(self, name)) for name in SECTIONS}}
        header = (b"# twinsync node config. The Syncthing API key is in keys/syncthing-api.key.\n")
        return header + tomli_w.dumps(doc).encode()


def load_config(layout: NodeLayout) -> NodeConfig:
    """Every bad value is named with its file and key, so the user can fix it by hand."""
    path = layout.require().config
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Cannot read {path} ({exc}); fix the file.") from None
    try:
        node, st = data["node"], data["syncthing"]
        config = NodeConfig(name=node["name"], device_id=node["device_id"],
                            syncthing_url=st["url"], managed=st.get("managed", False))
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is missing the value {exc}; add it back by hand or restore the file from a backup.") from None
    for key, value, kind in (("node.name", config.name, str), ("node.device_id", config.device_id, str),
                             ("syncthing.url", config.syncthing_url, str), ("syncthing.managed", config.managed, bool)):
        if not isinstance(value, kind):
            raise ConfigError(f"{key} in {path} must be a {kind.__name__}, not {value!r}.")
    if not config.syncthing_url.startswith(("http://", "https://")):
        raise ConfigError(f"syncthing.url in {path} must start with http:// or https://, "
                          f"not {config.syncthing_url!r}.")
    for section, settings in SECTIONS.items():
        config = replace(config, **{section: _settings(path, section, settings, data.get(section, {}))})
    if config.link.listen:
        try:
            parse_listen(config.link.listen)
        except TwinsyncError as exc:
            raise ConfigError(f"link.listen in {path}: {exc}.") from None
    try:
        check_node_name(config.name)
    except TwinsyncError as exc:
        raise ConfigError(f"node.name in {path}: {exc}") from None
    return config


def _settings(path: Path, section: str, settings: type, table: object):
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] in {path} must be a table.")
    kinds = {f.name: type(f.default) for f in fields(settings)}
    unknown = sorted(set(table) - set(kinds))
    if unknown:
        raise ConfigError(f"{path} has unknown setting {section}.{unknown[0]}; remove it "
                          f"(known: {', '.join(sorted(kinds))}).")
    for name, value in table.items():
        if kinds[name] is str and not isinstance(value, str):
            raise ConfigError(f"{section}.{name} in {path} must be text in quotes, not {value!r}.")
        if kinds[name] is bool and not isinstance(value, bool):
            raise ConfigError(f"{section}.{name} in {path} must be true or false, not {value!r}.")
        if kinds[name] is tuple:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{section}.{name} in {path} must be a list of texts in quotes, "
                                  f"like [\"python3\", \"reason.py\"], not {value!r}.")
            table = {**table, name: tuple(value)}
        if kinds[name] is int and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise ConfigError(f"{section}.{name} in {path} must be a positive whole number, not {value!r}.")
    return settings(**table)


def save_config(layout: NodeLayout, config: NodeConfig) -> None:
    write_atomic(layout.config, config.to_toml())


def write_api_key(layout: NodeLayout, api_key: str) -> None:
    write_atomic(layout.api_key, api_key.encode() + b"\n", mode=0o600)


def read_api_key(layout: NodeLayout) -> str:
    path = layout.api_key
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise KeyFileError(f"Cannot read the Syncthing API key {path} ({exc.strerror}); "
                           "write the key from Syncthing's GUI into it (mode 600).") from None
    if not is_private_file_safe(path):
        os.chmod(path, 0o600)
    return key
