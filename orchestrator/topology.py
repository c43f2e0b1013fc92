"""`twinsync topology show|apply`: this node's side of a topology (DESIGN §6), applied
through Syncthing's REST API to twinsync's folders only, idempotently. Every node applies the
same topology (the demo does it on all of them)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from folders.files import write_atomic
from orchestrator.node import Node
from syncthing.folderspec import FRAMES_FOLDER_ID, IGNORE_PATTERNS, MODULES_FOLDER_ID, is_twinsync_folder
from syncthing.topology import Plan, Topology, check, plan

TOPOLOGY_FILE = "topology.json"


def load_topology(node: Node) -> Topology:
    path = node.layout.home / TOPOLOGY_FILE
    return Topology.from_dict(json.loads(path.read_text())) if path.exists() else Topology()


def _devices(node: Node) -> dict[str, str]:
    return {node.name: node.config.device_id, **{n: p.device_id for n, p in node.peers().items()}}


def apply_topology(node: Node, topology: Topology) -> Plan:
    """Make this node's Syncthing match the topology; returns what was applied."""
    devices = _devices(node)
    check(topology, set(devices))
    existing = {f["id"] for f in node.client.folders()}
    wanted = plan(topology, node.name, devices, node.layout.frames_shared,
                  {n: node.layout.recovery(n) for n in devices}, existing, node.layout.modules_shared)
    for folder in wanted.folders:
        Path(folder["path"]).mkdir(parents=True, exist_ok=True)
        current = node.client.folder(folder["id"])
        if current is None:
            node.client.put_folder(folder)
        else:
            node.client.patch_folder(folder["id"], {k: folder[k] for k in ("devices", "type", "path")})
    node.client.set_ignores(FRAMES_FOLDER_ID, wanted.frames_ignores)
    node.client.set_ignores(MODULES_FOLDER_ID, IGNORE_PATTERNS)
    for folder_id in wanted.remove:
        node.client.delete_folder(folder_id)
    write_atomic(node.layout.home / TOPOLOGY_FILE, (json.dumps(topology.to_dict(), indent=2) + "\n").encode())
    return wanted


@dataclass(frozen=True)
class TopologyView:
    topology: Topology
    folders: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"topology": self.topology.to_dict(), "folders": self.folders}


def show_topology(node: Node) -> TopologyView:
    names = {d: n for n, d in _devices(node).items()}
    ours = [f for f in node.client.folders() if is_twinsync_folder(f["id"])]
    folders = [{"id": f["id"], "type": f["type"], "path": f["path"],
                "shared_with": sorted(names.get(d["deviceID"], d["deviceID"][:7]) for d in f["devices"]
                                      if d["deviceID"] != node.config.device_id)}
               for f in sorted(ours, key=lambda f: f["id"])]
    return TopologyView(load_topology(node), folders)
