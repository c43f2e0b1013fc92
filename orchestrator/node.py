"""An opened node home: the layout, its config and a Syncthing client, handed to services."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from folders.keys import load_private_key, parse_public_key
from folders.layout import NodeLayout
from folders.trust import TrustedPeer, load_trusted
from orchestrator import state
from orchestrator.config import NodeConfig, load_config, read_api_key
from syncthing.client import SyncthingClient


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
        return load_private_key(self.layout.private_key)

    def peers(self) -> dict[str, TrustedPeer]:
        return load_trusted(self.layout.trusted)

    def trusted_keys(self) -> dict[str, Ed25519PublicKey]:
        """Authors whose frames this node accepts: itself and every paired peer."""
        keys = {name: peer.key() for name, peer in self.peers().items()}
        keys[self.name] = parse_public_key(self.layout.public_key.read_text().strip())
        return keys
