"""An opened node home: the layout, its config and a Syncthing client, handed to services."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from folders.errors import TwinsyncError, echo
from folders.keys import load_private_key, parse_public_key, public_key_text
from folders.layout import NodeLayout
from folders.trust import TrustedPeer, load_trusted
from orchestrator import state
from orchestrator.config import NodeConfig, load_config, read_api_key
from syncthing.client import SyncthingClient


class IdentityError(TwinsyncError):
    """This node's configured name is one its trusted peers know with another key."""


@dataclass
class Node:
    layout: NodeLayout
    config: NodeConfig
    client: SyncthingClient

    @classmethod
    def open(cls, home: Path, *, timeout: float | None = None) -> Node:
        layout = NodeLayout(Path(home)).require()
        config = load_config(layout)
        state.ensure_schema(layout.state_db)
        client = SyncthingClient(config.syncthing_url, read_api_key(layout),
                                 **({"timeout": timeout} if timeout else {}))
        return cls(layout, config, client)

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
