"""Per peer: how fast Syncthing moves data to and from it, and how many items of
twinsync's folders it still lacks, as Syncthing's GUI shows them ("Download/Upload Rate",
"Out of Sync Items"). `nodes` and the TUI's Nodes tab show them next to the fingerprints."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.node import Node
from syncthing.errors import SyncthingError
from syncthing.folderspec import is_twinsync_folder
from syncthing.rates import transfer_rates

#: How long `nodes` watches the byte counters (Syncthing's GUI polls every 10 s; a command
#: must answer quickly, and a half-second shows whether data flows).
RATE_WINDOW_S = 0.5


@dataclass(frozen=True)
class PeerTraffic:
    name: str
    device_id: str
    connected: bool
    paused: bool
    in_bps: float | None  # None: no two readings yet
    out_bps: float | None
    need_items: int | None  # items of twinsync's folders the peer lacks; None: Syncthing did not say
    need_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Reading:
    """One reading of the connections' byte counters, kept to compute the next rates."""

    at: float
    connections: dict[str, dict[str, Any]]


def read_connections(node: Node, clock: Callable[[], float] = time.monotonic) -> Reading:
    return Reading(clock(), node.client.connections())


def peer_traffic(node: Node, previous: Reading | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> tuple[Reading, list[PeerTraffic]]:
    """Every trusted peer's traffic since `previous` (no rates without one), and the
    reading to pass as `previous` next time. Raises SyncthingError when Syncthing does not
    answer."""
    current = read_connections(node, clock)
    rates = transfer_rates(previous.connections, current.connections, current.at - previous.at) if previous else {}
    folders = [f for f in node.client.folders() if is_twinsync_folder(f["id"])]
    devices = {d["deviceID"]: d for d in node.client.devices()}
    out = []
    for name, peer in sorted(node.peers().items()):
        shared = [f["id"] for f in folders if any(d["deviceID"] == peer.device_id for d in f["devices"])]
        need_items = need_bytes = None
        try:
            answers = [node.client.completion(folder_id, peer.device_id) for folder_id in shared]
            need_items = sum(a.get("needItems", 0) + a.get("needDeletes", 0) for a in answers)
            need_bytes = sum(a.get("needBytes", 0) for a in answers)
        except SyncthingError:  # a folder removed meanwhile: the counts are unknown, not zero
            pass
        conn = current.connections.get(peer.device_id, {})
        rate = rates.get(peer.device_id) if conn.get("connected") else (0.0, 0.0)
        out.append(PeerTraffic(name, peer.device_id, bool(conn.get("connected")),
                               bool(devices.get(peer.device_id, {}).get("paused")),
                               rate[0] if rate else None, rate[1] if rate else None, need_items, need_bytes))
    return current, out


def measure_traffic(node: Node, window_s: float = RATE_WINDOW_S) -> list[PeerTraffic]:
    """One-shot, for `nodes`: two readings `window_s` apart (no wait when no peer is
    connected: every rate is 0 then)."""
    first = read_connections(node)
    if any(c.get("connected") for c in first.connections.values()):
        time.sleep(window_s)
    return peer_traffic(node, first)[1]


def rate_text(bps: float | None) -> str:
    """Bytes per second as people read it: `0 B/s`, `12.3 kB/s`, `1.2 MB/s`."""
    if bps is None:
        return "-"
    for unit, size in (("MB/s", 1e6), ("kB/s", 1e3)):
        if bps >= size:
            return f"{bps / size:.1f} {unit}"
    return f"{bps:.0f} B/s"
