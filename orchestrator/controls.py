"""The controls a Syncthing user expects, for twinsync's peers and folders: pause, resume,
rescan, and unpair. Each is a change to Syncthing's config through its REST API (one
device or one folder at a time, never the whole config) and, for unpair, to trusted.toml.

Unpair is one-sided, as in Syncthing: this node forgets the peer (its device, its shares of
twinsync's folders, its trust entry, its recovery folder kept aside or removed). The peer
finds out by this node vanishing: it sees it disconnected and, after its
[alerts] peer_disconnected_after_s, raises a peer-disconnected alert; its Syncthing lists
this node's attempts as refused, and `twinsync unpair` there finishes the job.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from folders.errors import TwinsyncError, echo
from folders.trace import utc_now
from folders.trust import TrustedPeer, save_trusted
from orchestrator.node import Node
from orchestrator.state import stamp
from syncthing.errors import SyncthingAPIError
from syncthing.folderspec import is_twinsync_folder, recovery_folder_id

logger = logging.getLogger(__name__)

#: Where a kept recovery folder of an unpaired peer goes: out of trace/recovery/, so merge
#: and fingerprints no longer read a node this one does not trust.
UNPAIRED_DIR = "unpaired"


class ControlError(TwinsyncError):
    """A peer or folder that is not there, or a control that cannot apply."""


def find_peer(node: Node, who: str) -> TrustedPeer:
    """A trusted peer by node name, or by its device ID (a unique prefix of 7+ characters)."""
    peers = node.peers()
    if who in peers:
        return peers[who]
    wanted = who.upper().replace("-", "")
    if len(wanted) >= 7:
        found = [p for p in peers.values() if p.device_id.replace("-", "").startswith(wanted)]
        if len(found) == 1:
            return found[0]
    known = ", ".join(sorted(peers)) or "none yet (`twinsync pair`)"
    raise ControlError(f"No trusted peer is called {echo(who)}; name one of: {known}.")


def find_folder(node: Node, name: str) -> str:
    """A twinsync folder's ID from its ID or its short name (`frames`, `recovery-laptop`)."""
    ids = sorted(f["id"] for f in node.client.folders() if is_twinsync_folder(f["id"]))
    for candidate in (name, f"twinsync-{name}"):
        if candidate in ids:
            return candidate
    short = ", ".join(i.removeprefix("twinsync-") for i in ids)
    raise ControlError(f"twinsync has no folder {echo(name)} in Syncthing; name one of: {short}.")


def set_paused(node: Node, *, peer: str | None = None, folder: str | None = None, paused: bool) -> str:
    """Pause or resume a peer (every folder with it) or one twinsync folder (with every
    peer); returns what changed, in a sentence."""
    if (peer is None) == (folder is None):
        raise ControlError("Name a peer, or a folder with --folder (not both).")
    word = "paused" if paused else "resumed"
    if peer is not None:
        target = find_peer(node, peer)
        node.client.patch_device(target.device_id, {"paused": paused})
        logger.info("%s peer %s", word, target.name)
        return f"Peer {target.name} {word}: Syncthing {'stops' if paused else 'starts again'} exchanging with it."
    folder_id = find_folder(node, folder)
    node.client.patch_folder(folder_id, {"paused": paused})
    logger.info("%s folder %s", word, folder_id)
    return f"Folder {folder_id} {word}."


def rescan(node: Node, folder: str | None = None) -> list[str]:
    """Ask Syncthing to scan twinsync's folders (or one) now; returns their IDs."""
    ids = [find_folder(node, folder)] if folder else sorted(
        f["id"] for f in node.client.folders() if is_twinsync_folder(f["id"]) and not f.get("paused"))
    for folder_id in ids:
        node.client.scan(folder_id)
    return ids


@dataclass
class UnpairReport:
    node: str
    peer: str
    device_id: str
    folders_unshared: list[str] = field(default_factory=list)
    device_removed: bool = False
    kept_for: list[str] = field(default_factory=list)  # the user's own folders still shared with it
    recovery: str = "none"  # "kept", "removed" or "none"
    recovery_path: str | None = None


def unpair(node: Node, who: str, *, keep_recovery: bool = True) -> UnpairReport:
    """Forget a peer on this side: Syncthing first (so nothing more arrives), then its
    recovery folder, then trusted.toml (so a half-done unpair can be run again)."""
    peer = find_peer(node, who)
    report = UnpairReport(node.name, peer.name, peer.device_id)
    client = node.client
    own_recovery = recovery_folder_id(peer.name)
    for folder in client.folders():
        devices = folder.get("devices", [])
        if all(d["deviceID"] != peer.device_id for d in devices):
            continue
        if not is_twinsync_folder(folder["id"]):
            report.kept_for.append(folder.get("label") or folder["id"])
        elif folder["id"] != own_recovery:
            client.patch_folder(folder["id"], {"devices": [d for d in devices if d["deviceID"] != peer.device_id]})
            report.folders_unshared.append(folder["id"])
    if client.folder(own_recovery) is not None:
        client.delete_folder(own_recovery)
        report.folders_unshared.append(own_recovery)
    if not report.kept_for:
        try:
            client.delete_device(peer.device_id)
            report.device_removed = True
        except SyncthingAPIError as exc:
            if exc.status != 404:
                raise
    path = node.layout.recovery(peer.name)
    if path.is_symlink():  # not ours to follow: the link goes, what it points to stays
        path.unlink()
        report.recovery, report.recovery_path = "removed", str(path)
    elif path.exists():
        if keep_recovery:
            aside = _aside(node.layout.home / UNPAIRED_DIR, peer.name)
            aside.parent.mkdir(parents=True, exist_ok=True)
            path.rename(aside)
            report.recovery, report.recovery_path = "kept", str(aside)
        else:
            shutil.rmtree(path)
            report.recovery, report.recovery_path = "removed", str(path)
    peers = node.peers()
    peers.pop(peer.name, None)
    save_trusted(node.layout.trusted, peers)
    logger.info("unpaired %s (%s)", peer.name, peer.device_id[:7])
    return report


def _aside(root: Path, name: str) -> Path:
    target = root / name
    return target if not target.exists() else root / f"{name}-{stamp(utc_now()).replace(':', '')}"


def unpair_summary(report: UnpairReport) -> str:
    lines = [f"Unpaired {report.peer} ({report.device_id[:7]}): no longer trusted here."]
    if report.folders_unshared:
        lines.append(f"  Syncthing: stopped sharing {', '.join(report.folders_unshared)} with it.")
    if report.device_removed:
        lines.append("  Syncthing: device removed.")
    elif report.kept_for:
        lines.append(f"  Syncthing keeps the device: your own folder(s) {', '.join(report.kept_for)} "
                     "are shared with it; remove it in Syncthing's GUI if it should go too.")
    if report.recovery == "kept":
        lines.append(f"  Its recovery folder is kept in {report.recovery_path} (steps already merged stay in trace.db).")
    elif report.recovery == "removed":
        lines.append(f"  Its recovery folder {report.recovery_path} is removed (steps already merged stay in trace.db).")
    lines.append(f"On {report.peer}, run `twinsync unpair {report.node}` to finish there; until then it "
                 "sees this node as disconnected.")
    return "\n".join(lines)

