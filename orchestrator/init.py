"""`twinsync init`: build a node home and its two Syncthing folders, all or nothing.

The home is built under a temporary sibling name and renamed into place only when
complete; if Syncthing then refuses a folder, everything made so far is taken back.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from folders.errors import HomeError
from folders.files import TEMP_PREFIX
from folders.gitstore import FrameRepo
from folders.keys import generate_keypair
from folders.layout import NodeLayout, check_node_name
from folders.linkwire import WireError, parse_listen
from folders.trace import ensure_schema as ensure_trace_schema
from folders.trust import save_trusted
from orchestrator import state
from orchestrator.config import LinkSettings, NodeConfig, save_config, write_api_key
from syncthing.client import SyncthingClient
from syncthing.configxml import GuiEndpoint, find_config, read_gui_endpoint
from syncthing.errors import SyncthingConfigError, SyncthingError
from syncthing.folderspec import (FRAMES_FOLDER_ID, IGNORE_PATTERNS, MODULES_FOLDER_ID, check_folder_free,
                                  frames_folder, modules_folder, recovery_folder, recovery_folder_id)
from syncthing.process import ManagedSyncthing

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncthingTarget:
    """Which Syncthing the node talks to: given explicitly, found in config.xml, or managed."""

    url: str | None = None
    api_key: str | None = None
    managed: bool = False


@dataclass(frozen=True)
class InitResult:
    home: Path
    name: str
    device_id: str
    syncthing_url: str
    managed: bool
    syncthing_pid: int | None
    #: The Syncthing config.xml the URL and key came from; None when both were given as flags.
    config_path: Path | None
    link: str = ""  # where the peer link listens, "" for none



def _check_home(home: Path) -> None:
    if (home / "twinsync.toml").exists():
        raise HomeError(f"{home} is already a twinsync node home; nothing was changed. "
                        "Use it as is, or pass another --home.")
    if home.exists() and (not home.is_dir() or any(home.iterdir())):
        raise HomeError(f"{home} exists and is not an empty directory; pass an empty or new --home.")
    parent = home.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HomeError(f"Cannot create {parent} ({exc.strerror}); pass a --home you can write.") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HomeError(f"Cannot write in {parent}; pass a --home you can write.")


def _resolve_target(target: SyncthingTarget) -> GuiEndpoint | tuple[str, str]:
    """The endpoint read from the user's config.xml (so init can name the file), or the URL
    and key given as flags."""
    if target.url or target.api_key:
        if not (target.url and target.api_key):
            raise SyncthingConfigError("Pass both --syncthing-url and --api-key, or neither to "
                                       "use the Syncthing found in its config.xml.")
        return target.url, target.api_key
    return read_gui_endpoint(find_config())


def _build_home(staging: Path, final: NodeLayout, name: str) -> None:
    """Everything of DESIGN §1 that lives on disk, made under `staging`."""
    layout = NodeLayout(staging)
    for directory in (layout.keys_dir, layout.frames_local, layout.frames_shared,
                      layout.modules_shared, layout.recovery(name)):
        directory.mkdir(parents=True)
    os.chmod(layout.keys_dir, 0o700)
    generate_keypair(layout.private_key, layout.public_key)
    save_trusted(layout.trusted, {})
    ensure_trace_schema(layout.trace_db)
    state.ensure_schema(layout.state_db)
    FrameRepo.create(layout.frames_git, final.frames_shared).close()
    FrameRepo.create(layout.modules_git, final.modules_shared).close()


def init_node(home: Path, name: str, target: SyncthingTarget, *, link: str = LinkSettings.listen) -> InitResult:
    """`link` is where the daemon serves the peer link (host:port, "" for none)."""
    home = Path(home).expanduser().absolute()
    check_node_name(name)
    if link:
        try:
            parse_listen(link)
        except WireError as exc:
            raise HomeError(f"--link {exc}.") from None
    _check_home(home)
    layout = NodeLayout(home)
    staging = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}init-", dir=home.parent))
    managed: ManagedSyncthing | None = None
    created: list[str] = []
    moved = False
    client: SyncthingClient | None = None
    config_path: Path | None = None
    cert: Path | None = None
    try:
        if target.managed:
            endpoint = ManagedSyncthing(NodeLayout(staging).syncthing_home).generate(name)
            url, api_key = endpoint.url, endpoint.api_key
            config_path = layout.syncthing_home / "config.xml"
        else:
            resolved = _resolve_target(target)
            if isinstance(resolved, GuiEndpoint):
                url, api_key, config_path = resolved.url, resolved.api_key, resolved.config_path
                cert = resolved.https_cert
            else:
                url, api_key = resolved
            client = SyncthingClient(url, api_key, cert=cert)
            client.ping()
            check_folder_free(client, FRAMES_FOLDER_ID, layout.frames_shared)
            check_folder_free(client, MODULES_FOLDER_ID, layout.modules_shared)
            check_folder_free(client, recovery_folder_id(name), layout.recovery(name))
        _build_home(staging, layout, name)
        write_api_key(NodeLayout(staging), api_key)
        if home.exists():
            home.rmdir()
        os.replace(staging, home)
        moved = True
        pid = None
        if target.managed:
            managed = ManagedSyncthing(layout.syncthing_home)
            pid = managed.start(detach=True)
            client = managed.client()
        device_id = client.my_device_id()
        for folder in (frames_folder(layout.frames_shared, [device_id]),
                       modules_folder(layout.modules_shared, [device_id]),
                       recovery_folder(name, layout.recovery(name), [device_id], own=True)):
            existed = client.folder(folder["id"]) is not None
            client.put_folder(folder)
            if not existed:
                created.append(folder["id"])
            client.set_ignores(folder["id"], IGNORE_PATTERNS)
        save_config(layout, NodeConfig(name=name, device_id=device_id, syncthing_url=url,
                                       managed=target.managed, link=LinkSettings(listen=link)))
        logger.info("initialised node %s in %s", name, home)
        return InitResult(home, name, device_id, url, target.managed, pid, config_path, link)
    except BaseException:
        _undo(client, created, managed, home if moved else staging)
        raise
    finally:
        if client is not None:
            client.close()


def _undo(client: SyncthingClient | None, created: list[str], managed: ManagedSyncthing | None,
          path: Path) -> None:
    """Take back a failed init: our folders out of Syncthing, the managed process, the files."""
    for folder_id in created:
        try:
            client.delete_folder(folder_id)
        except SyncthingError:
            logger.warning("could not remove Syncthing folder %s after a failed init", folder_id)
    if managed is not None:
        managed.stop()
    shutil.rmtree(path, ignore_errors=True)
