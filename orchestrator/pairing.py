"""`invite`, `pair` and `peers`: two nodes that pair with each other's codes start syncing.

Pairing is idempotent: running `pair` again with the same code re-applies the same
Syncthing config, which is also how a pairing interrupted half-way is finished.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from folders.errors import InviteError
from folders.invite import Invite, decode_invite
from folders.linkwire import parse_listen
from folders.trace import utc_now
from folders.trust import TrustedPeer, save_trusted
from orchestrator.node import Node
from orchestrator.state import stamp
from syncthing.errors import SyncthingError
from syncthing.folderspec import (FRAMES_FOLDER_ID, IGNORE_PATTERNS, check_folder_free, recovery_folder,
                                  recovery_folder_id, with_device)

logger = logging.getLogger(__name__)

WILDCARD_HOSTS = ("0.0.0.0", "[::]", "::", "")


def invite_addresses(listen: list[str]) -> list[str]:
    """Concrete listen addresses as given; `default` or a wildcard bind means discovery."""
    concrete, dynamic = [], False
    for address in listen:
        if address == "default" or "://" not in address:
            dynamic = True
            continue
        host = address.split("://", 1)[1].rsplit(":", 1)[0]
        if host in WILDCARD_HOSTS:
            dynamic = True
        else:
            concrete.append(address)
    return concrete + (["dynamic"] if dynamic or not concrete else [])


def make_invite(node: Node) -> Invite:
    listen = node.client.options().get("listenAddresses", ["default"])
    link = parse_listen(node.config.link.listen)[1] if node.config.link.listen else 0
    return Invite(name=node.name, device_id=node.client.my_device_id(),
                  addresses=tuple(invite_addresses(listen)),
                  public_key=node.layout.public_key.read_text().strip(), link=link or None)


def pair(node: Node, code: str, *, now: datetime | None = None) -> TrustedPeer:
    """Check everything first, then change Syncthing, then record the peer as trusted."""
    invite = decode_invite(code)
    my_key = node.layout.public_key.read_text().strip()
    device_id = node.client.my_device_id()
    if invite.device_id == device_id or invite.public_key == my_key:
        raise InviteError("That is this node's own invite code; run `twinsync invite` on the "
                          "other machine and pair with the code it prints.")
    if invite.name == node.name:
        raise InviteError(f"The other node is also called {node.name!r}; node names must be unique, "
                          "so initialise one of them again with another --name.")
    peers = node.peers()
    known = peers.get(invite.name)
    if known and (known.device_id, known.public_key) != (invite.device_id, invite.public_key):
        raise InviteError(f"A different peer named {invite.name!r} is already trusted; remove it "
                          f"from {node.layout.trusted} first if it was replaced.")
    peer_recovery = node.layout.recovery(invite.name)
    check_folder_free(node.client, recovery_folder_id(invite.name), peer_recovery)

    client = node.client
    client.put_device({"deviceID": invite.device_id, "name": invite.name,
                       "addresses": list(invite.addresses), "autoAcceptFolders": False,
                       "compression": "metadata"})
    from orchestrator.modules import share_modules  # Git: only pairing needs it, not `status`/`peers`

    share_modules(node, invite.device_id)
    for folder_id in (FRAMES_FOLDER_ID, recovery_folder_id(node.name)):
        folder = client.folder(folder_id)
        if folder is None:
            raise SyncthingError(f"Syncthing has no folder {folder_id!r} any more; run "
                                 "`twinsync doctor` to see what is missing.")
        client.patch_folder(folder_id, {"devices": with_device(folder, invite.device_id)})
    peer_recovery.mkdir(parents=True, exist_ok=True)
    existing = client.folder(recovery_folder_id(invite.name))
    devices = [device_id, invite.device_id]
    if existing is not None:
        devices = [d["deviceID"] for d in with_device(existing, invite.device_id)]
    client.put_folder(recovery_folder(invite.name, peer_recovery, devices, own=False))
    client.set_ignores(recovery_folder_id(invite.name), IGNORE_PATTERNS)

    added = stamp(now or utc_now())
    peer = TrustedPeer(invite.name, invite.device_id, invite.public_key, invite.addresses,
                       known.added if known else added, invite.link)
    peers[invite.name] = peer
    save_trusted(node.layout.trusted, peers)
    logger.info("paired with %s (%s)", invite.name, invite.device_id[:7])
    return peer


@dataclass(frozen=True)
class PeerStatus:
    name: str
    device_id: str
    connected: bool | None
    address: str | None
    last_seen: str | None


def peer_statuses(node: Node, *, ask_syncthing: bool = True) -> tuple[list[PeerStatus], SyncthingError | None]:
    """Trusted peers with Syncthing's view of them, and why Syncthing could not give it (then
    `connected` is None). `ask_syncthing=False` when the caller already knows it cannot."""
    peers = node.peers()
    connections, stats, problem = None, {}, None
    if ask_syncthing:
        try:
            connections = node.client.connections()
            stats = node.client.device_stats()
        except SyncthingError as exc:
            connections, stats, problem = None, {}, exc
    out = []
    for name, peer in sorted(peers.items()):
        conn = (connections or {}).get(peer.device_id, {})
        out.append(PeerStatus(name, peer.device_id,
                              None if connections is None else bool(conn.get("connected")),
                              conn.get("address") or None,
                              seen_at(stats.get(peer.device_id, {}).get("lastSeen"))))
    return out, problem


#: Syncthing reports a device it never saw as seen at the Unix epoch, in its local zone
#: (`1969-12-31T19:00:00-05:00` in New York), so any time before this one means never.
NEVER_SEEN_BEFORE = datetime(1971, 1, 1, tzinfo=timezone.utc)


def seen_at(last_seen: str | None) -> str | None:
    """Syncthing's `lastSeen` as given, or None for a device never seen. A value that is not a
    time is passed on unchanged, so the user sees what Syncthing said."""
    if not last_seen:
        return None
    try:
        when = datetime.fromisoformat(last_seen)
    except ValueError:
        return last_seen
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return None if when < NEVER_SEEN_BEFORE else last_seen
