"""Flow 2 of DESIGN §3: Syncthing conflict copies and invalid frames become queue items.

Triage first: a byte-identical copy is settled and an invalid copy is quarantined without
asking anyone. Every other copy becomes an item plus a Git branch `fork/<frame>/<device>-<time>`
holding the other version, based on the last commit the two versions share. A person
approves (the other version becomes the frame) or rejects (the copy goes, the branch stays).
When a peer decides, the copy vanishes here too and this node closes its own item.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from folders.errors import TwinsyncError
from folders.files import write_atomic
from folders.frame import FRAME_SUFFIX
from folders.gitstore import FrameRepo, GitStoreError
from folders.validator import VerdictCache
from orchestrator.node import Node
from orchestrator.state import stamp
from syncthing.conflicts import parse_conflict_copy

logger = logging.getLogger(__name__)

OPEN = "open"


class ConflictError(TwinsyncError):
    """A conflict item that does not exist or cannot take the asked decision."""


@dataclass(frozen=True)
class ConflictItem:
    id: int
    kind: str
    frame: str | None
    path: str
    copy_path: str | None
    device: str | None
    status: str
    reason: str | None
    branch: str | None
    ours_hash: str | None
    theirs_hash: str | None
    ours_author: str | None
    theirs_author: str | None
    created: str
    decided_by: str | None
    decided_at: str | None

    @classmethod
    def from_row(cls, row: Mapping) -> ConflictItem:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


class ConflictQueue:
    def __init__(self, node: Node, repo: FrameRepo, cache: VerdictCache,
                 *, clock: Callable[[], datetime]) -> None:
        self.node = node
        self.repo = repo
        self.cache = cache
        self.root = node.layout.frames_shared
        self.clock = clock

    # -- called by the pipeline, under the frames lock ----------------------------------

    def open_invalid(self, db, rel: str, code: str, message: str) -> None:
        existing = db.execute("SELECT id FROM conflicts WHERE kind = 'invalid' AND path = ? AND status = ?",
                              [rel, OPEN]).fetchone()
        if existing:
            db["conflicts"].update(existing[0], {"reason": f"{code}: {message}"})
        else:
            self._insert(db, kind="invalid", path=rel, reason=f"{code}: {message}")

    def close_invalid(self, db, rel: str, why: str) -> None:
        self.close_invalid_many(db, [rel], why)

    def close_invalid_many(self, db, rels: list[str], why: str) -> None:
        """One statement for a whole batch: 10k valid frames must not cost 10k UPDATEs."""
        db.execute("UPDATE conflicts SET status = 'closed', decided_by = ?, decided_at = ? "
                   "WHERE kind = 'invalid' AND status = ? AND path IN (SELECT value FROM json_each(?))",
                   [f"twinsync ({why})", stamp(self.clock()), OPEN, json.dumps(rels)])

    def handle_copy(self, db, rel: str, trusted: Mapping[str, Ed25519PublicKey]) -> str:
        """What became of the copy: settled, quarantined, queued, closed or unchanged."""
        copy = self.root / rel
        if not copy.exists():
            return self._copy_gone(db, rel)
        if db.execute("SELECT 1 FROM conflicts WHERE copy_path = ? AND status = ?", [rel, OPEN]).fetchone():
            return "unchanged"
        parsed = parse_conflict_copy(rel)
        original_rel = parsed.original.as_posix() if parsed else None
        if not parsed or not original_rel.endswith(FRAME_SUFFIX):
            self.open_invalid(db, rel, "bad_name", f"{rel} is a conflict copy of something that is not a frame; delete it.")
            return "queued"
        original = self.root / original_rel
        data = copy.read_bytes()
        if original.is_file() and original.read_bytes() == data:
            copy.unlink()
            logger.info("settled %s: identical to %s", rel, original_rel)
            return "settled"
        frame_id = original_rel.removesuffix(FRAME_SUFFIX)
        verdict = self.cache.validate(self.root, Path(rel), trusted, self.node.config.frames.max_size,
                                      expected_id=frame_id)
        if not verdict.ok:
            self._quarantine(db, rel, original_rel, parsed.device, f"{verdict.code}: {verdict.message}")
            return "quarantined"
        ours = self.cache.validate(self.root, Path(original_rel), trusted, self.node.config.frames.max_size)
        branch = f"fork/{frame_id}/{parsed.device or 'unknown'}-{parsed.time:%Y%m%d-%H%M%S}"
        try:
            self.repo.create_branch_with(branch, self._shared_base(original_rel, verdict.frame.parents),
                                         original_rel, data, f"fork of {frame_id} from device {parsed.device}",
                                         verdict.frame.author)
        except GitStoreError as exc:
            logger.warning("conflict %s queued without a fork branch: %s", rel, exc)
            branch = None
        self._insert(db, kind="conflict", frame=frame_id, path=original_rel, copy_path=rel,
                     device=parsed.device, branch=branch, theirs_hash=verdict.frame.hash,
                     theirs_author=verdict.frame.author,
                     ours_hash=ours.frame.hash if ours.ok else None,
                     ours_author=ours.frame.author if ours.ok else None)
        logger.info("conflict on %s queued (copy from device %s)", frame_id, parsed.device)
        return "queued"

    def _shared_base(self, original_rel: str, parents: tuple[str, ...]) -> str:
        """The newest commit whose version of the frame is one the copy was made from;
        failing that, the commit before our current version; failing that, HEAD."""
        commits = []
        for commit, content in self.repo.versions(original_rel):
            commits.append(commit)
            try:
                if json.loads(content).get("hash") in parents:
                    return commit
            except (ValueError, AttributeError):
                continue
        if len(commits) > 1:
            return commits[1]
        return self.repo.head()

    def _quarantine(self, db, rel: str, original_rel: str, device: str | None, reason: str) -> None:
        target = self.node.layout.home / "quarantine" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(self.root / rel, target)
        self._insert(db, kind="quarantined", frame=original_rel.removesuffix(FRAME_SUFFIX),
                     path=original_rel, copy_path=rel, device=device, status="quarantined",
                     reason=f"{reason} Moved to {target}.")
        logger.warning("quarantined %s: %s", rel, reason)

    def _copy_gone(self, db, rel: str) -> str:
        self.close_invalid(db, rel, "the file is gone")
        row = db.execute("SELECT id FROM conflicts WHERE copy_path = ? AND status = ?", [rel, OPEN]).fetchone()
        if not row:
            return "unchanged"
        db["conflicts"].update(row[0], {"status": "closed", "decided_by": "another node",
                                        "decided_at": stamp(self.clock())})
        logger.info("conflict #%d closed: decided on another node", row[0])
        return "closed"

    def _insert(self, db, **fields) -> int:
        row = {"status": OPEN, "created": stamp(self.clock()), **fields}
        return db["conflicts"].insert(row).last_pk

    # -- decisions, called by the service layer under the frames lock -------------------

    def approve(self, db, item: ConflictItem) -> list[str]:
        """The copy's version becomes the frame; returns the paths changed (for a scan)."""
        copy, original = self._decidable(item)
        write_atomic(original, copy.read_bytes())
        copy.unlink()
        self.repo.commit([item.path], f"approve #{item.id}: {item.frame} takes the version from "
                         f"device {item.device} (decided on {self.node.name})\n", item.theirs_author,
                         when=self.clock())
        self._decide(db, item, "approved")
        return [item.path, item.copy_path]

    def reject(self, db, item: ConflictItem) -> list[str]:
        """The copy goes; its version stays reachable on the fork branch."""
        copy, _ = self._decidable(item)
        copy.unlink()
        self._decide(db, item, "rejected")
        return [item.copy_path]

    def _decidable(self, item: ConflictItem) -> tuple[Path, Path]:
        if item.status != OPEN:
            raise ConflictError(f"Conflict #{item.id} is already {item.status}; see `twinsync conflicts --all`.")
        if item.kind != "conflict":
            raise ConflictError(f"Item #{item.id} is an invalid file, not a conflict: fix or delete "
                                f"{self.root / item.path} and it closes itself.")
        copy = self.root / item.copy_path
        if not copy.is_file():
            raise ConflictError(f"The conflict copy {copy} is gone (decided on another node?); "
                                "the daemon closes the item.")
        return copy, self.root / item.path

    def _decide(self, db, item: ConflictItem, status: str) -> None:
        db["conflicts"].update(item.id, {"status": status, "decided_by": self.node.name,
                                         "decided_at": stamp(self.clock())})
        logger.info("conflict #%d %s on %s", item.id, status, self.node.name)
