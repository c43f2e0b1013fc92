"""Tombstones: a deleted frame's last version, who deleted it and when (state.db
`tombstones`), so an old copy cannot silently come back: Syncthing 2.x forgets a deletion
after its retention interval and a node offline for longer announces its old copy as a new
file. The pipeline writes one per deletion and holds a version from before it as a rollback
(`FramePipeline._is_rollback`); `backfill` rebuilds them from Git's history when state.db is
new (lost, or from before tombstones), so "losing state.db costs a reconcile pass" stays true.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timezone

from folders.frame import FRAME_SUFFIX
from folders.gitstore import FrameRepo, GitStoreError
from folders.layout import NodeLayout
from orchestrator.state import open_state, stamp

logger = logging.getLogger(__name__)

#: Who deleted a frame when nobody can say (Syncthing did not answer, or Git's history only).
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Tombstone:
    """One row of state.db `tombstones`."""

    path: str
    frame_id: str
    hash: str
    deleted_at: str
    deleted_by: str

    @classmethod
    def from_row(cls, row: Mapping) -> Tombstone:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


def signed_version(content: bytes) -> tuple[str, str, str | None] | None:
    """(hash, author, created) of a version Git holds; only valid frames are ever committed."""
    try:
        data = json.loads(content)
        return data["hash"], data["author"], data.get("created")
    except (ValueError, TypeError, KeyError, RecursionError, AttributeError):
        return None


def from_history(repo: FrameRepo) -> list[dict]:
    """A tombstone row for every frame Git's history deleted and HEAD does not hold."""
    rows = []
    for path, (commit, when) in repo.deletions().items():
        if not path.endswith(FRAME_SUFFIX):
            continue
        try:
            version = signed_version(repo.show(f"{commit}^", path))
        except GitStoreError:
            continue
        if version is not None:
            rows.append({"path": path, "frame_id": path.removesuffix(FRAME_SUFFIX), "hash": version[0],
                         "deleted_at": stamp(when.astimezone(timezone.utc)), "deleted_by": UNKNOWN})
    return rows


def backfill(layout: NodeLayout) -> int:
    """Adds the tombstones Git's history implies (keeping any already there); returns how
    many rows Git's history gave. A history that cannot be read is logged, not fatal."""
    try:
        with FrameRepo(layout.frames_git) as repo:
            rows = from_history(repo)
    except GitStoreError as exc:
        logger.warning("tombstones of deleted frames not rebuilt from Git: %s", exc)
        return 0
    db = open_state(layout.state_db)
    try:
        with db.conn:
            db["tombstones"].insert_all(rows, pk="path", ignore=True)
    finally:
        db.close()
    return len(rows)
