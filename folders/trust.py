"""trusted.toml: the peers whose frames, segments and fingerprints this node accepts."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from folders.errors import HomeError, KeyFileError, echo
from folders.files import write_atomic
from folders.keys import parse_public_key


@dataclass(frozen=True)
class TrustedPeer:
    name: str
    device_id: str
    public_key: str
    addresses: tuple[str, ...]
    added: str
    #: The peer link port its invite carried (None: it had none); its fingerprint's wins.
    link: int | None = None

    def key(self) -> Ed25519PublicKey:
        return parse_public_key(self.public_key)


def load_trusted(path: Path) -> dict[str, TrustedPeer]:
    """Peers by name; a hand-edited file with a bad entry is named, not half-used."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise HomeError(f"Cannot read {path} ({exc}); fix the file or restore it from a backup.") from None
    peers = {}
    for name, entry in data.get("peers", {}).items():
        try:
            link = entry.get("link")
            if link is not None and (type(link) is not int or not 0 < link < 65536):
                raise TypeError(f"link {echo(link)} is not a port number")
            peer = TrustedPeer(name=name, device_id=entry["device_id"], public_key=entry["public_key"],
                               addresses=tuple(entry.get("addresses", ())), added=entry.get("added", ""),
                               link=link)
            peer.key()
        except (KeyError, TypeError, KeyFileError) as exc:
            raise HomeError(f"Peer {echo(name)} in {path} is malformed ({exc}); fix it or pair again.") from None
        peers[name] = peer
    return peers


def save_trusted(path: Path, peers: dict[str, TrustedPeer]) -> None:
    doc = {"peers": {name: {k: (list(v) if isinstance(v, tuple) else v)
                            for k, v in asdict(p).items() if k != "name" and v is not None}
                     for name, p in sorted(peers.items())}}
    header = b"# Peers this node trusts. Written by `twinsync pair`; edit with care.\n"
    write_atomic(path, header + tomli_w.dumps(doc).encode())
