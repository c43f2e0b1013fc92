"""Flow 2 of DESIGN §3: Syncthing conflict copies, invalid frames, rollbacks and quarantined
files become queue items; nothing the daemon refuses or holds back is silent.

Triage first: a byte-identical copy is settled and an invalid copy is quarantined without
asking anyone (the quarantined file is an item, so it is seen). Every other copy becomes an
item plus a Git branch `fork/<frame>/<device>-<time>` holding the other version, based on the
last commit the two versions share. A person approves (the other version becomes the frame)
or rejects (the copy goes, the branch stays). When a peer decides, the copy vanishes here too
and this node closes its own item.

A rollback (an older genuine version of a frame written back over a newer one) is held
back, not committed: approve commits it, reject writes the newer version back. A deleted
frame whose old version comes back (its tombstone, orchestrator/tombstones.py) is the same kind of
item, with the deletion as the newer state: approve brings the frame back, reject deletes it
again.

A copy whose original is gone is a delete that won over an edit (Syncthing 2.x lets a
deletion win a conflict and keeps the edit as the copy; with 1.x a user may delete the
original by hand): its own kind, `deleted`, because approving it brings a deleted frame back.
Approve restores the edit, reject keeps the delete. An open conflict follows its original:
it becomes `deleted` when the original goes, and a conflict again if the original returns.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from folders.errors import TwinsyncError
from folders.files import write_atomic
from folders.frame import FRAME_SUFFIX
from folders.gitstore import FrameRepo, GitStoreError
from folders.gitobjects import object_id
from folders.validator import VerdictCache, validate_frame_bytes
from orchestrator.node import Node
from orchestrator.state import stamp
from orchestrator.tombstones import Tombstone
from syncthing.conflicts import parse_conflict_copy

logger = logging.getLogger(__name__)

OPEN = "open"
#: What each kind of item is; `twinsync conflicts`, `conflict show` and the TUI say it.
KINDS = {
    "conflict": "two versions of a frame (a Syncthing conflict copy)",
    "invalid": "a file in frames.shared/ that is not a valid frame",
    "rollback": "an older version of a frame written back over a newer one",
    "quarantined": "a conflict copy that failed its checks, moved out of frames.shared/",
    "deleted": "a frame deleted on one node and edited on another (a conflict copy whose original is gone)",
}
#: Kinds whose item holds a conflict copy in frames.shared/ that a decision acts on.
COPY_KINDS = ("conflict", "deleted")
#: Kinds whose item compares two versions of a frame: `conflict show` and the TUI show their diff.
DIFF_KINDS = (*COPY_KINDS, "rollback")


class ConflictError(TwinsyncError):
    """A conflict item that does not exist or cannot take the asked decision."""


@dataclass(frozen=True)
class ConflictItem:
    """One queue item. `ours_*` is the version current now (what the frame is, or what Git
    holds for a rollback), `theirs_*` the version set aside (Syncthing's conflict copy, or
    the older version written back); authors are the frames' signing nodes, never the
    Syncthing device that carried a file."""

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
    revision: str | None = None  # rollback: the older commit whose version came back
    location: str | None = None  # quarantined: where the file is now
    ours_created: str | None = None  # when the current version was written (its frame's `created`)
    theirs_created: str | None = None  # when the set-aside version was written
    device_name: str | None = None  # the node whose device ID marks the copy, from trusted.toml (not stored)

    @property
    def key(self) -> str:
        """What names this item on every node alike (queue ids are per node): the copy's
        path, or for a rollback the path and the version written back."""
        return self.copy_path or f"{self.path}@{self.theirs_hash}"

    @property
    def decided(self) -> bool:
        return self.status != OPEN

    @property
    def undoes_delete(self) -> bool:
        """A rollback whose newer state is the frame's deletion (no newer version to write back)."""
        return self.kind == "rollback" and self.ours_hash is None

    def summary(self) -> str:
        """One line saying what the item is, for lists."""
        if self.undoes_delete:
            return (f"deleted by {self.ours_author or '?'} · set aside {_by(self.theirs_author)} "
                    f"(revision {(self.revision or '?')[:12]}, back after the delete)")
        if self.kind == "quarantined":
            return f"{(self.reason or '').split(':')[0]}; now in {self.location or 'quarantine'}"
        if self.kind == "deleted":
            return f"deleted · set aside {_by(self.theirs_author)}"
        if self.kind == "rollback":
            return (f"current {_by(self.ours_author)} · set aside {_by(self.theirs_author)} "
                    f"(revision {(self.revision or '?')[:12]})")
        if self.kind in VERSION_KINDS:
            return f"current {_by(self.ours_author)} · set aside {_by(self.theirs_author)}"
        return (self.reason or "").split(":")[0] or "-"

    def current_version(self) -> str | None:
        """The version current now, who wrote it and when; None for kinds without versions."""
        if self.kind == "deleted":
            return "none: the frame was deleted (a delete carries no author)"
        if self.kind not in VERSION_KINDS:
            return None
        if self.undoes_delete:
            return f"none: the frame was deleted by {self.ours_author or '?'}"
        where = " (committed in Git)" if self.kind == "rollback" else ""
        return f"by {self.ours_author or '?'}, written {_when(self.ours_created)}{where}"

    def set_aside_version(self) -> str | None:
        """The version set aside, who wrote it, when, and where it is."""
        if self.kind not in VERSION_KINDS:
            return None
        text = f"by {self.theirs_author or '?'}, written {_when(self.theirs_created)}"
        if self.undoes_delete:
            return f"{text} (revision {(self.revision or '?')[:12]}, came back after the delete and held back)"
        if self.kind == "rollback":
            return f"{text} (revision {(self.revision or '?')[:12]}, written back over the current one and held back)"
        return f"{text} (in Syncthing's conflict copy {self.copy_path}, {self.device_text()})"

    def device_text(self) -> str:
        """Syncthing's mark on the copy, as a detail: the short ID its name carries is the device
        that last changed the *winning* (current) version, not the copy's author."""
        who = f" = {self.device_name}" if self.device_name else ""
        return (f"Syncthing named it after device {self.device or '?'}{who}, the last to change the version "
                "that won")

    def consequences(self) -> tuple[str, str] | None:
        """What approve and what reject do to this item on every node, in words; None when
        neither applies (an invalid file closes by itself once it is fixed or deleted)."""
        theirs, ours, frame = _by(self.theirs_author), _by(self.ours_author), self.frame
        kept = f"kept in Git on branch {self.branch}" if self.branch else "kept in this node's Git history"
        if self.kind == "conflict":
            return (f"the set-aside version {theirs} becomes {frame} on every node; the conflict copy is removed "
                    f"and the version {ours} stays in Git history.",
                    f"the current version {ours} stays {frame} on every node; the conflict copy is removed "
                    f"and the set-aside version {theirs} is {kept}.")
        if self.kind == "deleted":
            return (f"the set-aside version {theirs} comes back as {frame} on every node, undoing the delete; "
                    "the conflict copy is removed.",
                    f"{frame} stays deleted on every node; the conflict copy is removed and the set-aside "
                    f"version {theirs} is {kept}.")
        if self.undoes_delete:
            return (f"the set-aside version {theirs} (revision {(self.revision or '?')[:12]}) comes back as "
                    f"{frame} on every node, undoing its deletion by {self.ours_author or '?'}; it is committed.",
                    f"the file is deleted again on every node; {frame} stays deleted.")
        if self.kind == "rollback":
            return (f"the set-aside version {theirs} (revision {(self.revision or '?')[:12]}) becomes {frame} "
                    "on every node; it is committed.",
                    f"the current version {ours} is written back and stays {frame} on every node.")
        if self.kind == "quarantined":
            return (f"the file stays in {self.location or 'quarantine'} for you to look at; the item closes.",
                    f"the file is deleted from {self.location or 'quarantine'}; the item closes.")
        return None

    def decision(self) -> str:
        """Who decided and where, or that nobody has yet: the same words on every node."""
        if not self.decided:
            return "open: waiting for approve or reject"
        if self.decided_by == ANOTHER_NODE:
            return (f"{self.status}: its copy went away here {_when(self.decided_at)}, decided on another node "
                    "(who decided shows once that node's trace is published and merged here) or removed by hand")
        if self.status == "closed":
            return f"closed by {self.decided_by or '?'} {_when(self.decided_at)}"
        return f"{self.status} on {self.decided_by or '?'} {_when(self.decided_at)}"

    def commit_message(self, node: str) -> str:
        """The Git message of an approval: what the frame became, whose text it is, where it was decided."""
        subject = (f"{self.frame}: the set-aside version {_by(self.theirs_author)} "
                   + ("comes back, undoing the delete" if self.kind == "deleted" or self.undoes_delete
                      else "becomes current")
                   + f" (approved on {node}, queue item #{self.id})")
        lines = [f"set-aside version, now current: {self.set_aside_version()}"]
        if self.kind != "deleted" and not self.undoes_delete:
            lines.append(f"version replaced: {self.current_version()}")
        return subject + "\n\n" + "\n".join(lines) + "\n"

    def as_json(self) -> dict:
        """The stored fields, and the same sentences the CLI and TUI show."""
        return {**asdict(self), "current_version": self.current_version(),
                "set_aside_version": self.set_aside_version(), "decision": self.decision(),
                "approve": (self.consequences() or (None, None))[0],
                "reject": (self.consequences() or (None, None))[1]}

    @classmethod
    def from_row(cls, row: Mapping) -> ConflictItem:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__ if k in row})


def detail_lines(item: ConflictItem) -> list[tuple[str, str]]:
    """(label, sentence) pairs that `conflict show` prints and the TUI's queue detail shows:
    the two versions and who wrote them, then what each choice does, or who decided."""
    lines = []
    if item.kind in VERSION_KINDS:
        then = " when queued" if item.decided else ""
        lines += [(f"current version{then}", item.current_version()),
                  (f"set-aside version{then}", item.set_aside_version())]
    elif item.reason:
        lines.append(("problem", item.reason))
    if item.branch:
        lines.append(("fork branch", item.branch))
    consequences = item.consequences()
    if item.decided:
        lines.append(("decided", item.decision()))
    elif consequences:
        lines += [("approve", consequences[0]), ("reject", consequences[1])]
    return lines


#: Kinds whose item is about two versions of a frame: one current now, one set aside.
VERSION_KINDS = ("conflict", "deleted", "rollback")
#: `decided_by` of an item closed because its copy vanished: a peer decided it.
ANOTHER_NODE = "another node"


def _by(author: str | None) -> str:
    return f"by {author or '?'}"


def _when(stamp_text: str | None) -> str:
    """2026-11-25T08:00:00.123Z → at 2026-11-25 08:00:00 UTC."""
    return f"at {stamp_text[:19].replace('T', ' ')} UTC" if stamp_text else "at an unknown time"


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

    def open_rollback(self, db, rel: str, frame_id: str, revision: str, back: tuple[str, str, str | None],
                      current: tuple[str, str, str | None] | None, deleted: Tombstone | None = None) -> None:
        """`back` and `current` are (hash, author, created) of the version written back and of
        the newer one Git holds, or `current` is None and `deleted` the frame's tombstone when the
        newer state is its deletion; one open item per path, updated if another old version comes."""
        if current is None:
            who = deleted.deleted_by if deleted else "unknown"
            fields = dict(ours_hash=None, ours_author=who, ours_created=None,
                          reason=f"rollback: revision {revision[:12]} by {back[1]} came back after the "
                                 f"frame was deleted by {who} at {deleted.deleted_at if deleted else '?'}")
        else:
            fields = dict(ours_hash=current[0], ours_author=current[1], ours_created=current[2],
                          reason=f"rollback: revision {revision[:12]} by {back[1]} was written back over "
                                 f"the newer version by {current[1]}")
        fields.update(frame=frame_id, revision=revision, theirs_hash=back[0], theirs_author=back[1],
                      theirs_created=back[2])
        existing = db.execute("SELECT id FROM conflicts WHERE kind = 'rollback' AND path = ? AND status = ?",
                              [rel, OPEN]).fetchone()
        if existing:
            db["conflicts"].update(existing[0], fields)
            return
        item = self._insert(db, kind="rollback", path=rel, **fields)
        logger.warning("held back #%d: %s is an older version of %s (revision %s by %s); approve "
                       "or reject it in the queue", item, rel, frame_id, revision[:12], back[1])

    def close_invalid(self, db, rel: str, why: str) -> None:
        self.close_invalid_many(db, [rel], why)

    def close_invalid_many(self, db, rels: list[str], why: str) -> None:
        """Invalid-file and rollback items of paths that are now valid (or gone) close
        themselves; one statement for a whole batch: 10k frames must not cost 10k UPDATEs."""
        db.execute("UPDATE conflicts SET status = 'closed', decided_by = ?, decided_at = ? "
                   "WHERE kind IN ('invalid', 'rollback') AND status = ? "
                   "AND path IN (SELECT value FROM json_each(?))",
                   [f"twinsync ({why})", stamp(self.clock()), OPEN, json.dumps(rels)])

    def holds_version(self, db, rel: str, digest: str) -> bool:
        """Whether `digest` is one side of a conflict on this frame: such a version coming back
        is a decision (here or on a peer), not a rollback."""
        return db.execute("SELECT 1 FROM conflicts WHERE kind IN ('conflict', 'deleted') AND path = ? "
                          "AND ? IN (ours_hash, theirs_hash)", [rel, digest]).fetchone() is not None

    def follow_originals(self, db, present: list[str], gone: list[str]) -> None:
        """An open conflict whose original was deleted becomes a `deleted` item (approving it
        would bring the frame back), and one whose original came back a conflict again."""
        for rels, old, new in ((gone, "conflict", "deleted"), (present, "deleted", "conflict")):
            db.execute("UPDATE conflicts SET kind = ? WHERE kind = ? AND status = ? "
                       "AND path IN (SELECT value FROM json_each(?))", [new, old, OPEN, json.dumps(rels)])

    def handle_copy(self, db, rel: str, trusted: Mapping[str, Ed25519PublicKey]) -> str:
        """What became of the copy: settled, quarantined, queued, closed or unchanged."""
        copy = self.root / rel
        if not copy.exists():
            return self._copy_gone(db, rel)
        if db.execute("SELECT 1 FROM conflicts WHERE kind IN ('conflict', 'deleted') AND copy_path = ? "
                      "AND status = ?", [rel, OPEN]).fetchone():
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
                                         original_rel, data,
                                         f"{frame_id}: the version by {verdict.frame.author} set aside by a "
                                         f"Syncthing conflict (copy {parsed.path.name})\n",
                                         verdict.frame.author)
        except GitStoreError as exc:
            logger.warning("conflict %s queued without a fork branch: %s", rel, exc)
            branch = None
        deleted = not os.path.lexists(original)
        self._insert(db, kind="deleted" if deleted else "conflict", frame=frame_id, path=original_rel, copy_path=rel,
                     device=parsed.device, branch=branch, theirs_hash=verdict.frame.hash,
                     theirs_author=verdict.frame.author, theirs_created=verdict.frame.created,
                     ours_hash=ours.frame.hash if ours.ok else None,
                     ours_author=ours.frame.author if ours.ok else None,
                     ours_created=ours.frame.created if ours.ok else None)
        if deleted:
            logger.info("%s queued: deleted, set-aside version by %s", frame_id, verdict.frame.author)
        else:
            logger.info("conflict on %s queued: current version by %s, set-aside version by %s", frame_id,
                        ours.frame.author if ours.ok else "?", verdict.frame.author)
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
            except (ValueError, AttributeError, RecursionError):
                continue
        if len(commits) > 1:
            return commits[1]
        return self.repo.head()

    def _quarantine(self, db, rel: str, original_rel: str, device: str | None, reason: str) -> None:
        target = self.node.layout.home / "quarantine" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(self.root / rel, target)
        self._insert(db, kind="quarantined", frame=original_rel.removesuffix(FRAME_SUFFIX),
                     path=original_rel, copy_path=rel, device=device, reason=reason, location=str(target))
        logger.warning("quarantined %s: %s", rel, reason)

    def _copy_gone(self, db, rel: str) -> str:
        self.close_invalid(db, rel, "the file is gone")
        row = db.execute("SELECT id FROM conflicts WHERE kind IN ('conflict', 'deleted') AND copy_path = ? "
                         "AND status = ?", [rel, OPEN]).fetchone()
        if not row:
            return "unchanged"
        db["conflicts"].update(row[0], {"status": "closed", "decided_by": ANOTHER_NODE,
                                        "decided_at": stamp(self.clock())})
        logger.info("conflict #%d closed: decided on another node", row[0])
        return "closed"

    def _insert(self, db, **fields) -> int:
        row = {"status": OPEN, "created": stamp(self.clock()), **fields}
        return db["conflicts"].insert(row).last_pk

    # -- decisions, called by the service layer under the frames lock -------------------

    def approve(self, db, item: ConflictItem) -> list[str]:
        """Conflict: the copy's version becomes the frame. Rollback: the older version is
        committed. Quarantined: the file stays where it is. Returns the paths changed (for a scan)."""
        self._check_open(item)
        if item.kind == "rollback":
            return self._keep_rollback(db, item)
        if item.kind == "quarantined":
            self._decide(db, item, "approved")
            return []
        copy, original = self._decidable(item)
        data = self._queued_copy(item, copy)
        write_atomic(original, data)
        copy.unlink()
        self.repo.commit([item.path], item.commit_message(self.node.name), item.theirs_author, when=self.clock(),
                         vouched={item.path: object_id(b"blob", data)})
        self._decide(db, item, "approved")
        return [item.path, item.copy_path]

    def reject(self, db, item: ConflictItem) -> list[str]:
        """Conflict: the copy goes; its version stays reachable on the fork branch. Rollback:
        the newer version comes back. Quarantined: the file is deleted."""
        self._check_open(item)
        if item.kind == "rollback":
            return self._undo_rollback(db, item)
        if item.kind == "quarantined":
            Path(item.location or "").unlink(missing_ok=True)
            self._decide(db, item, "rejected")
            return []
        copy, _ = self._decidable(item)
        copy.unlink()
        self._decide(db, item, "rejected")
        return [item.copy_path]

    def _keep_rollback(self, db, item: ConflictItem) -> list[str]:
        _, blob = self._rolled_back_file(item)
        self.repo.commit([item.path], item.commit_message(self.node.name), item.theirs_author, when=self.clock(),
                         vouched={item.path: blob})
        self._decide(db, item, "approved")
        return [item.path]

    def _undo_rollback(self, db, item: ConflictItem) -> list[str]:
        path, _ = self._rolled_back_file(item)
        if item.undoes_delete:
            path.unlink()
        else:
            write_atomic(path, self.repo.show("HEAD", item.path))
        self._decide(db, item, "rejected")
        return [item.path]

    def _rolled_back_file(self, item: ConflictItem) -> tuple[Path, str | None]:
        """The file must still hold the version the item is about: anything else is newer
        than the decision and must not be committed or overwritten by it. With the blob id
        of the bytes judged, which is all a commit may then record."""
        path = self.root / item.path
        verdict = self.cache.validate(self.root, Path(item.path), self.node.trusted_keys(),
                                      self.node.config.frames.max_size)
        if not verdict.ok or verdict.frame.hash != item.theirs_hash:
            raise ConflictError(f"{path} changed since item #{item.id} was queued; the daemon re-checks "
                                "it and closes or updates the item.")
        return path, verdict.blob

    def _queued_copy(self, item: ConflictItem, copy: Path) -> bytes:
        """The copy's bytes, judged as the frame they are to become: they must still be the
        version the item was queued with, or an approval would put unjudged bytes in Git."""
        data = copy.read_bytes()
        verdict = validate_frame_bytes(Path(item.path), data, self.node.trusted_keys(),
                                       self.node.config.frames.max_size)
        if not verdict.ok or verdict.frame.hash != item.theirs_hash:
            raise ConflictError(f"The conflict copy {copy} changed since item #{item.id} was queued; the "
                                "daemon re-checks it and updates the item.")
        return data

    def _check_open(self, item: ConflictItem) -> None:
        if item.status != OPEN:
            raise ConflictError(f"Item #{item.id} is already {item.status}; see `twinsync conflicts --all`.")

    def _decidable(self, item: ConflictItem) -> tuple[Path, Path]:
        if item.kind not in COPY_KINDS:
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
