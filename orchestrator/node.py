"""An opened node home: the layout, its config and a Syncthing client, handed to services."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from folders.errors import TwinsyncError, echo
from folders.keys import load_private_key, parse_public_key, public_key_text
from folders.layout import NodeLayout
from folders.trust import TrustedPeer, load_trusted
from orchestrator import state
from orchestrator.config import NodeConfig, load_config, read_api_key, write_api_key
from syncthing.client import SyncthingClient
from syncthing.configxml import GuiEndpoint, find_config, read_gui_endpoint
from syncthing.errors import SyncthingConfigError

logger = logging.getLogger(__name__)

#: Seconds an interactive command (status, doctor, peers, nodes) waits for each Syncthing
#: answer: a hung Syncthing is reported at once, not after the daemon's patient timeouts.
INTERACTIVE_TIMEOUT = 2.5


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _reread_key(endpoint: GuiEndpoint) -> str | None:
    try:
        return read_gui_endpoint(endpoint.config_path).api_key
    except SyncthingConfigError:
        return None


class IdentityError(TwinsyncError):
    """This node's configured name is one its trusted peers know with another key."""


def local_syncthing(layout: NodeLayout, config: NodeConfig) -> GuiEndpoint | None:
    """The node's Syncthing as its config.xml describes it, when that file is on this machine:
    the managed home's, or the user's own (found in Syncthing's order) when its GUI port is
    the one in twinsync.toml. None for a remote or unknown Syncthing."""
    if config.managed:
        path = layout.syncthing_home / "config.xml"
    else:
        try:
            path = find_config()
        except SyncthingConfigError:
            return None
    try:
        endpoint = read_gui_endpoint(path)
    except SyncthingConfigError:
        return None
    mine, theirs = urlsplit(config.syncthing_url), urlsplit(endpoint.url)
    same_host = mine.hostname == theirs.hostname or {mine.hostname, theirs.hostname} <= LOOPBACK
    return endpoint if same_host and mine.port == theirs.port else None


def syncthing_client(layout: NodeLayout, config: NodeConfig, *, timeout: float | None = None,
                     on_notice: Callable[[str], None] | None = None) -> SyncthingClient:
    """A client for the node's Syncthing that trusts its own HTTPS certificate and picks up an
    API key the user regenerated (read again from config.xml, saved to keys/syncthing-api.key,
    logged and told to `on_notice`)."""
    local = local_syncthing(layout, config)

    def save(key: str) -> None:
        write_api_key(layout, key)
        message = (f"Syncthing's API key changed; twinsync read the new one from "
                   f"{local.config_path} and saved it in {layout.api_key}.")
        logger.info(message)
        if on_notice is not None:
            on_notice(message)

    return SyncthingClient(config.syncthing_url, read_api_key(layout),
                           **({"timeout": timeout} if timeout else {}),
                           cert=local.https_cert if local else None,
                           key_source=(lambda: _reread_key(local)) if local else None,
                           on_new_key=save, key_hint=f"write it into {layout.api_key}")


@dataclass
class Node:
    layout: NodeLayout
    config: NodeConfig
    client: SyncthingClient

    @classmethod
    def open(cls, home: Path, *, timeout: float | None = None,
             on_notice: Callable[[str], None] | None = None) -> Node:
        """`on_notice` hears what twinsync changed by itself (a re-read API key), for the CLI
        to print; the log gets it too."""
        layout = NodeLayout(Path(home)).require()
        config = load_config(layout)
        if state.ensure_schema(layout.state_db):
            from orchestrator import tombstones  # needs Git: only when state.db was made or upgraded

            tombstones.backfill(layout)
        return cls(layout, config, syncthing_client(layout, config, timeout=timeout, on_notice=on_notice))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        return self.config.name

    def signing_key(self) -> Ed25519PrivateKey:
        """The key everything this node publishes is signed with, under its name; refused
        when the name is another node's, so nothing is ever published as someone else."""
        key = load_private_key(self.layout.private_key)
        self._check_identity(key)
        return key

    def check_identity(self) -> None:
        """Raises IdentityError when `[node] name` names a peer that trusted.toml knows with
        another public key than this node's (say the config was copied from that peer)."""
        self._check_identity(load_private_key(self.layout.private_key))

    def _check_identity(self, key: Ed25519PrivateKey) -> None:
        peer = self.peers().get(self.name)
        if peer is not None and public_key_text(peer.key()) != public_key_text(key.public_key()):
            raise IdentityError(
                f"node.name in {self.layout.config} is {echo(self.name)}, but {self.layout.trusted} "
                "knows that name as another node with another key, so this node signs and publishes "
                "nothing under it; set node.name back to this node's own name.")

    def peers(self) -> dict[str, TrustedPeer]:
        return load_trusted(self.layout.trusted)

    def trusted_keys(self) -> dict[str, Ed25519PublicKey]:
        """Authors whose frames this node accepts: itself and every paired peer."""
        keys = {name: peer.key() for name, peer in self.peers().items()}
        keys[self.name] = parse_public_key(self.layout.public_key.read_text().strip())
        return keys
