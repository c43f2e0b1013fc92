"""What the trace tests share: a clock that ticks, node keys, and a fresh trace.db."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from folders import keys
from folders.trace import canonical_json, ensure_schema

START = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)


class TickClock:
    """A real clock stand-in that moves `step` forward on every reading."""

    def __init__(self, start: datetime = START, step: timedelta = timedelta(seconds=1)) -> None:
        self.now, self.step = start, step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


def node_keys(*names: str) -> tuple[dict[str, Ed25519PrivateKey], dict[str, Ed25519PublicKey]]:
    """Signing keys for these nodes, and the trusted map every node would hold."""
    keys = {name: Ed25519PrivateKey.generate() for name in names}
    return keys, {name: key.public_key() for name, key in keys.items()}


def resign(manifest_path: Path, key: Ed25519PrivateKey, **changes: object) -> None:
    """Rewrite a manifest with new fields and a valid signature by `key`: only the content
    checks can tell it from an honest one."""
    manifest = json.loads(manifest_path.read_text())
    manifest.update(changes)
    manifest.pop("sig")
    manifest["sig"] = keys.sign(key, canonical_json(manifest))
    manifest_path.write_text(json.dumps(manifest))


def new_trace(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ensure_schema(path)
    return path
