"""The Syncthing folders twinsync owns, as REST folder objects (DESIGN §1).

Frames are the only many-writer folder; each node's recovery folder is send-only at its
owner and receive-only everywhere else, so Syncthing itself enforces one writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncthing.errors import SyncthingConfigError

if TYPE_CHECKING:  # the client pulls in requests, which a caller of these specs may not need
    from syncthing.client import SyncthingClient

FRAMES_FOLDER_ID = "twinsync-frames"
RECOVERY_PREFIX = "twinsync-recovery-"
MODULES_FOLDER_ID = "twinsync-modules"

#: Never travel: our temp files, and Git control files, which would silently hide frames
#: from a node's history if a peer dropped one in. `(?d)` lets Syncthing delete them when
#: they block a directory removal.
IGNORE_PATTERNS = ["(?d).twinsync-tmp-*", "(?d).gitignore", "(?d).gitattributes"]

#: Seconds the Syncthing watcher waits before scanning; twinsync asks for scans itself
#: (DESIGN §7), this is the fallback for changes made by hand.
WATCHER_DELAY_S = 1


#: Per-namespace frames folders of the sharded and p2p topologies.
NAMESPACE_PREFIX = FRAMES_FOLDER_ID + "-"


def recovery_folder_id(node: str) -> str:
    return RECOVERY_PREFIX + node


def is_twinsync_folder(folder_id: str) -> bool:
    """Ours to show and manage; every other folder in Syncthing is the user's own."""
    return folder_id in (FRAMES_FOLDER_ID, MODULES_FOLDER_ID) or folder_id.startswith((RECOVERY_PREFIX, NAMESPACE_PREFIX))


def frames_path(folder_id: str, item: str) -> str | None:
    """Where an item of one of the frames folders lies under frames.shared/ (a namespace
    folder of the sharded and p2p topologies is its subfolder); None for any other folder."""
    if folder_id == FRAMES_FOLDER_ID:
        return item
    if folder_id.startswith(NAMESPACE_PREFIX):
        return f"{folder_id.removeprefix(NAMESPACE_PREFIX)}/{item}"
    return None


def _device_list(device_ids: list[str]) -> list[dict[str, str]]:
    return [{"deviceID": d} for d in device_ids]


def _base(folder_id: str, label: str, path: Path, folder_type: str, device_ids: list[str]) -> dict[str, Any]:
    return {
        "id": folder_id,
        "label": label,
        "path": str(path),
        "type": folder_type,
        "devices": _device_list(device_ids),
        "fsWatcherEnabled": True,
        "fsWatcherDelayS": WATCHER_DELAY_S,
        "maxConflicts": -1,
        "rescanIntervalS": 3600,
    }


def frames_folder(path: Path, device_ids: list[str]) -> dict[str, Any]:
    return _base(FRAMES_FOLDER_ID, "twinsync frames", path, "sendreceive", device_ids)


def modules_folder(path: Path, device_ids: list[str]) -> dict[str, Any]:
    """Many writers like frames: any node may publish a module; what runs is decided per node."""
    return _base(MODULES_FOLDER_ID, "twinsync modules", path, "sendreceive", device_ids)


def recovery_folder(node: str, path: Path, device_ids: list[str], *, own: bool) -> dict[str, Any]:
    """Send-only on its owner (`own`), receive-only on every peer."""
    folder_type = "sendonly" if own else "receiveonly"
    return _base(recovery_folder_id(node), f"twinsync recovery {node}", path, folder_type, device_ids)


def with_device(folder: dict[str, Any], device_id: str) -> list[dict[str, Any]]:
    """The folder's device list plus `device_id`, keeping every device already there."""
    devices = list(folder.get("devices", []))
    if all(d["deviceID"] != device_id for d in devices):
        devices.append({"deviceID": device_id})
    return devices


def check_folder_free(client: SyncthingClient, folder_id: str, path: Path) -> None:
    """A folder id Syncthing already uses for another path belongs to another node home."""
    existing = client.folder(folder_id)
    if existing is not None and Path(existing["path"]).expanduser() != path:
        raise SyncthingConfigError(
            f"Syncthing already has a folder {folder_id!r} at {existing['path']}; that is another "
            f"node home. Use it with --home, or remove the folder in Syncthing first.")
