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


def planned(root: Path, trace: Path, own: str) -> list[Path]:
    """The manifests the merge plan would merge or bridge next, in order."""
    from folders.mergeplan import Bridge, Merge, plan, survey
    return [a.segment.manifest_path if isinstance(a, Merge) else a.snapshot.manifest_path
            for actions in plan(survey(root, trace, own)).values() for a in actions
            if isinstance(a, (Merge, Bridge))]


def follow_plan(root: Path, trace: Path, own: str, trusted: dict) -> list[tuple[str, str, int]]:
    """Execute the merge plan the way orchestrator.recovery.merge_now does, without a node
    home: verify and merge each piece in order; a piece that fails goes back to the plan.
    Returns (kind, node, seq) of what was merged."""
    from folders.manifest import SegmentError
    from folders.mergeplan import Merge, plan, survey
    from folders.segments import merge_segment, verify_segment
    from folders.snapshots import merge_snapshot, verify_snapshot
    done, failed = [], {}
    while True:
        again = False
        for actions in plan(survey(root, trace, own), failed).values():
            for action in actions:
                if not hasattr(action, "segment") and not hasattr(action, "snapshot"):
                    continue
                piece = action.segment if isinstance(action, Merge) else action.snapshot
                verify, merge = ((verify_segment, merge_segment) if isinstance(action, Merge)
                                 else (verify_snapshot, merge_snapshot))
                try:
                    merge(trace, verify(piece.manifest_path, trusted))
                except SegmentError as exc:
                    failed[piece.manifest_path] = (exc.code, str(exc))
                    again = True
                    break
                done.append((piece.kind, piece.node, piece.seq))
        if not again:
            return done
