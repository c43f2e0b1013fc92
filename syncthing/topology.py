"""The seed's execution models as Syncthing sharing (DESIGN §6), as pure data.

Given a topology, the nodes and this node's paths, `plan` says which twinsync folders this
node should have, of which type, shared with whom, and which namespaces the main frames
folder must ignore. Applying it touches only twinsync's folders; each node applies the same
topology to its own Syncthing.

- swarm: every folder shared with every node.
- star: agents share every folder with the master only; the master with everyone, so the
  master relays each agent's recovery folder to the others.
- sharded: each namespace is its own folder `twinsync-frames-<ns>`, shared only among its
  owner nodes; the main frames folder ignores it, so its frames never reach anyone else.
- p2p: like sharded, but the set of nodes per namespace is who declared interest in it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syncthing.errors import SyncthingConfigError
from syncthing.folderspec import (IGNORE_PATTERNS, NAMESPACE_PREFIX, frames_folder, modules_folder,
                                  recovery_folder)

KINDS = ("swarm", "star", "sharded", "p2p")
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class Topology:
    kind: str = "swarm"
    master: str | None = None
    #: namespace → the nodes that hold it (owners for sharded, the interested for p2p)
    namespaces: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "master": self.master,
                "namespaces": {ns: sorted(nodes) for ns, nodes in sorted(self.namespaces.items())}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topology:
        return cls(data.get("kind", "swarm"), data.get("master"),
                   {ns: frozenset(nodes) for ns, nodes in data.get("namespaces", {}).items()})


def check(topology: Topology, nodes: set[str]) -> Topology:
    """Every name in a topology must be a known node or a valid namespace."""
    if topology.kind not in KINDS:
        raise SyncthingConfigError(f"Unknown topology {topology.kind!r}; use one of {', '.join(KINDS)}.")
    if topology.kind == "star" and topology.master not in nodes:
        raise SyncthingConfigError(f"A star needs --master set to one of {', '.join(sorted(nodes))}, "
                                   f"not {topology.master!r}.")
    if topology.kind in ("sharded", "p2p") and not topology.namespaces:
        raise SyncthingConfigError(f"A {topology.kind} topology needs at least one namespace "
                                   "(--map NS=NODE,NODE or --interest NODE=NS,NS).")
    for ns, members in topology.namespaces.items():
        if not _NAMESPACE.fullmatch(ns):
            raise SyncthingConfigError(f"Namespace {ns!r} is not a frame namespace (letters, digits, . _ -).")
        unknown = sorted(members - nodes)
        if unknown:
            raise SyncthingConfigError(f"Namespace {ns} names unknown node(s) {', '.join(unknown)}; "
                                       f"known: {', '.join(sorted(nodes))}.")
    return topology


@dataclass(frozen=True)
class Plan:
    folders: list[dict[str, Any]]
    frames_ignores: list[str]
    #: twinsync folders this node has that the topology no longer wants (namespace folders)
    remove: list[str]


def namespace_folder_id(ns: str) -> str:
    return NAMESPACE_PREFIX + ns


def plan(topology: Topology, me: str, devices: Mapping[str, str], frames_path: Path,
         recovery_path: Mapping[str, Path], existing: set[str], modules_path: Path | None = None) -> Plan:
    """`devices`: node name → device ID for every node, this one included. The modules
    folder (when `modules_path` is given) is shared as the frames folder is."""
    others = sorted(n for n in devices if n != me)
    ids = lambda names: [devices[n] for n in names]  # noqa: E731

    def share(owner: str | None) -> list[str]:
        """Who this node shares a folder with; `owner` None is the frames folder."""
        if topology.kind == "star":
            return others if me == topology.master else [topology.master]
        return others if owner in (None, me) else [owner]

    folders = [frames_folder(frames_path, ids(share(None))),
               recovery_folder(me, recovery_path[me], ids(share(me)), own=True)]
    folders += [recovery_folder(peer, recovery_path[peer], ids(share(peer)), own=False) for peer in others]
    if modules_path is not None:
        folders.append(modules_folder(modules_path, ids(share(None))))
    ignores = list(IGNORE_PATTERNS)
    wanted_ns = set()
    for ns, members in sorted(topology.namespaces.items()):
        ignores.append(f"/{ns}")
        if me in members and topology.kind in ("sharded", "p2p"):
            folder = frames_folder(frames_path / ns, ids(sorted(members - {me})))
            folder.update(id=namespace_folder_id(ns), label=f"twinsync frames {ns}")
            folders.append(folder)
            wanted_ns.add(folder["id"])
    remove = sorted(f for f in existing if f.startswith(NAMESPACE_PREFIX) and f not in wanted_ns)
    return Plan(folders, ignores, remove)
