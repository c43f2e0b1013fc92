"""`twinsync status`: one stable object describing this node, for people and scripts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.broker import BrokerHealth, broker_health
from orchestrator.heartbeat import DaemonHealth, link_port, read_health
from orchestrator.node import Node
from orchestrator.pairing import PeerStatus, peer_statuses
from syncthing.errors import SyncthingError
from syncthing.folderspec import is_twinsync_folder


@dataclass(frozen=True)
class FolderStatus:
    id: str
    path: str
    type: str
    state: str | None
    completion: float | None
    shared_with: list[str]


@dataclass(frozen=True)
class NodeStatus:
    node: str
    home: str
    device_id: str
    syncthing_url: str
    syncthing_ok: bool
    syncthing_version: str | None
    syncthing_error: str | None
    folders: list[FolderStatus] = field(default_factory=list)
    peers: list[PeerStatus] = field(default_factory=list)
    daemon: DaemonHealth | None = None
    mqtt: BrokerHealth | None = None
    #: The peer link: `listen` as configured ("" for none), `port` while the daemon serves it.
    link: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def node_status(node: Node, *, broker: bool = True) -> NodeStatus:
    """Never raises for a Syncthing that is down: the object says so instead. `broker=False`
    skips connecting to the MQTT broker (the TUI polls status every few seconds; the
    daemon's own `mqtt` piece reports a broker that is away)."""
    base = dict(node=node.name, home=str(node.layout.home), device_id=node.config.device_id,
                syncthing_url=node.config.syncthing_url, daemon=read_health(node.layout.home),
                mqtt=broker_health(node.config.mqtt) if broker else None,
                link={"listen": node.config.link.listen, "port": link_port(node.layout.home)})
    try:
        version = node.client.version()["version"]
        names = {d["deviceID"]: d.get("name") or d["deviceID"][:7] for d in node.client.devices()}
        folders = []
        for f in sorted((f for f in node.client.folders() if is_twinsync_folder(f["id"])), key=lambda f: f["id"]):
            st = node.client.folder_status(f["id"])
            done = node.client.completion(f["id"])
            folders.append(FolderStatus(
                f["id"], f["path"], f["type"], st.get("state"), done.get("completion"),
                sorted(names.get(d["deviceID"], d["deviceID"][:7]) for d in f["devices"]
                       if d["deviceID"] != node.config.device_id)))
    except SyncthingError as exc:
        return NodeStatus(**base, syncthing_ok=False, syncthing_version=None, syncthing_error=str(exc),
                          peers=peer_statuses(node, ask_syncthing=False)[0])
    return NodeStatus(**base, syncthing_ok=True, syncthing_version=version, syncthing_error=None,
                      folders=folders, peers=peer_statuses(node)[0])
