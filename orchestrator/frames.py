"""Frame services for the CLI and the TUI: put, get, list, history, restore, shadows, and
decisions on the conflict queue. Each change runs through the same pipeline as the daemon,
under the same lock, so it is validated, committed and announced to Syncthing at once."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from folders.decisions import item_decisions, record_item_decision
from folders.errors import FrameError, echo
from folders.frame import Frame, frame_path, save_frame
from folders.gitstore import FrameRepo, Revision
from folders.trace import TraceDB
from folders.validator import Verdict, validate_frame_bytes, validate_frame_file
from orchestrator.conflicts import ANOTHER_NODE, OPEN, VERSION_KINDS, ConflictError, ConflictItem
from orchestrator.lock import frames_lock
from orchestrator.node import Node
from orchestrator.pipeline import FramePipeline, classify, walk_files
from orchestrator.state import open_state


@contextmanager
def pipeline_for(node: Node) -> Iterator[FramePipeline]:
    repo = FrameRepo(node.layout.frames_git)
    try:
        yield FramePipeline(node, repo)
    finally:
        repo.close()


def _relative(frame_id: str) -> str:
    """The frame's path inside any frames folder (shared or local), as Git and the index name it."""
    return frame_path(Path(), frame_id).as_posix()


def _verdict(node: Node, root: Path, frame_id: str) -> Verdict:
    return validate_frame_file(root, Path(_relative(frame_id)), node.trusted_keys(),
                               node.config.frames.max_size)


def _checked(node: Node, frame: Frame) -> Frame:
    """The daemon's checks (size limit, id and path, JSON, hash, signature) on the bytes
    about to be written, so a frame every node would refuse is never written, queued or
    sent: the command fails with the validator's sentence instead."""
    verdict = validate_frame_bytes(Path(_relative(frame.id)), frame.to_bytes(), node.trusted_keys(),
                                   node.config.frames.max_size)
    if not verdict.ok:
        raise FrameError(f"Frame {echo(frame.id)} was not saved (nothing was written or sent): "
                         f"{verdict.message}")
    return frame


def _commit(node: Node, frame: Frame) -> None:
    """Save into frames.shared/ under the frames lock and ask Syncthing to send it at once: its
    bytes were checked before they were written, so peers need not wait for the rest. Then it
    runs through the daemon's pipeline (validate, commit, index), so it is in Git before the
    command returns."""
    _checked(node, frame)
    rel = _relative(frame.id)
    with pipeline_for(node) as pipeline:
        with frames_lock(node.layout.home):
            save_frame(node.layout.frames_shared, frame)
        pipeline.request_scan([rel])
        pipeline.process([rel], synced={rel})


def get_frame(node: Node, frame_id: str, *, shadow: bool = False) -> Frame:
    root = node.layout.frames_local if shadow else node.layout.frames_shared
    verdict = _verdict(node, root, frame_id)
    if not verdict.ok:
        raise FrameError(verdict.message)
    return verdict.frame


def put_frame(node: Node, frame_id: str, body: Any, *, shadow: bool = False) -> Frame:
    """Sign a new version (its parent is the current one, if any) and commit it now."""
    if not isinstance(body, dict):
        raise FrameError(f"The body of {echo(frame_id)} must be a JSON object, like '{{\"text\": \"...\"}}'.")
    root = node.layout.frames_local if shadow else node.layout.frames_shared
    current = _verdict(node, root, frame_id)
    parents = (current.frame.hash,) if current.ok else ()
    frame = Frame.create(frame_id, node.name, body, node.signing_key(), parents=parents)
    if shadow:
        save_frame(root, _checked(node, frame))
    else:
        _commit(node, frame)
    return frame


def promote_frame(node: Node, frame_id: str) -> Frame:
    """A shadow frame, checked, becomes a shared one; the shadow goes only once it is in."""
    shadow = get_frame(node, frame_id, shadow=True)
    _commit(node, shadow)
    frame_path(node.layout.frames_local, frame_id).unlink()
    return shadow


@dataclass(frozen=True)
class FrameEntry:
    id: str | None
    path: str
    ok: bool
    code: str
    author: str | None
    created: str | None
    hash: str | None
    message: str


def list_frames(node: Node, *, shadow: bool = False) -> list[FrameEntry]:
    """Every frame file on disk with its verdict (invalid ones included, never hidden)."""
    root = node.layout.frames_local if shadow else node.layout.frames_shared
    trusted = node.trusted_keys()
    entries = []
    for rel in sorted(rel for rel, _ in walk_files(root)):
        if classify(rel) != "frame":
            continue
        v = validate_frame_file(root, Path(rel), trusted, node.config.frames.max_size)
        f = v.frame
        entries.append(FrameEntry(f.id if f else None, rel, v.ok, str(v.code), f and f.author,
                                  f and f.created, f and f.hash, v.message))
    return entries


def frame_log(node: Node, frame_id: str) -> list[Revision]:
    with FrameRepo(node.layout.frames_git) as repo:
        revisions = repo.log(_relative(frame_id))
    if not revisions:
        raise FrameError(f"Frame {frame_id} has no history in {node.layout.frames_git}; "
                         "check the id with `twinsync frame list`.")
    return revisions


def revision_diff(node: Node, frame_id: str, rev: str) -> str:
    """What restoring `rev` would change: the unified diff, with the whole body as context,
    from the frame's current body to the body it had at `rev` (what `frame restore` and the
    TUI's `t` show before asking)."""
    with FrameRepo(node.layout.frames_git) as repo:
        old = repo.show(rev, _relative(frame_id))
    current = _verdict(node, node.layout.frames_shared, frame_id)
    now = current.frame.to_bytes() if current.ok else b""
    author = json.loads(old).get("author", "?") if old else "?"
    labels = (f"current version (by {current.frame.author if current.ok else '?'})",
              f"revision {rev[:12]} (by {author})")
    old_lines, now_lines = _body_lines(old), _body_lines(now)
    return "".join(difflib.unified_diff(now_lines, old_lines, *labels, n=max(len(old_lines), len(now_lines))))


def restore_frame(node: Node, frame_id: str, rev: str) -> Frame:
    """An old version comes back as a NEW version signed by this node, whose parents are the
    current and the old one, so the history shows who restored what."""
    with FrameRepo(node.layout.frames_git) as repo:
        data = repo.show(rev, _relative(frame_id))
    old = validate_frame_bytes(Path(_relative(frame_id)), data, node.trusted_keys(), len(data))
    if not old.ok:
        raise FrameError(f"Revision {echo(rev)} of {echo(frame_id)} cannot be restored: {old.message}")
    current = _verdict(node, node.layout.frames_shared, frame_id)
    parents = tuple(dict.fromkeys(([current.frame.hash] if current.ok else []) + [old.frame.hash]))
    frame = Frame.create(frame_id, node.name, old.frame.body, node.signing_key(), parents=parents)
    _commit(node, frame)
    return frame


# -- the conflict queue ------------------------------------------------------------------

#: Which items `list_conflicts` returns: the open queue, decided items (history), or both.
SHOWS = ("open", "decided", "all")


def list_conflicts(node: Node, *, shows: str = "open") -> list[ConflictItem]:
    """Open items (the queue), decided and closed ones (history, with who decided), or both;
    newest first. Items closed because a peer decided name that peer once its decision
    arrived with its published trace."""
    where = {"open": f"WHERE status = '{OPEN}'", "decided": f"WHERE status != '{OPEN}'", "all": ""}[shows]
    db = open_state(node.layout.state_db)
    try:
        rows = db.execute_returning_dicts(f"SELECT * FROM conflicts {where} ORDER BY id DESC")
    finally:
        db.close()
    return _named(node, [ConflictItem.from_row(r) for r in rows])


def get_conflict(node: Node, item_id: int) -> ConflictItem:
    db = open_state(node.layout.state_db)
    try:
        rows = db.execute_returning_dicts("SELECT * FROM conflicts WHERE id = ?", [item_id])
    finally:
        db.close()
    if not rows:
        raise ConflictError(f"There is no conflict #{item_id}; list them with `twinsync conflicts --all`.")
    return _named(node, [ConflictItem.from_row(rows[0])])[0]


def _named(node: Node, items: list[ConflictItem]) -> list[ConflictItem]:
    """Each item with the node name of the device its copy is marked with (from trusted.toml)
    and, when a peer decided it, that peer's decision from the merged trace."""
    devices = device_names(node)
    elsewhere = [i.key for i in items if i.decided_by == ANOTHER_NODE]
    decisions = {}
    if elsewhere and node.layout.trace_db.exists():
        with TraceDB(node.layout.trace_db, node.name) as trace:
            decisions = item_decisions(trace, elsewhere)
    out = []
    for item in items:
        named = replace(item, device_name=devices.get((item.device or "").upper())) if item.device else item
        if (d := decisions.get(item.key)) is not None:
            named = replace(named, status="approved" if d.verdict == "approve" else "rejected",
                            decided_by=d.author, decided_at=d.ts)
        out.append(named)
    return out


def device_names(node: Node) -> dict[str, str]:
    """Node names by Syncthing short device ID (the first 7 characters, as conflict copies
    carry them) and by full device ID, for this node and every trusted peer."""
    names = {}
    devices = [(peer.device_id, peer.name) for peer in node.peers().values()]
    for device, name in devices + [(node.config.device_id, node.name)]:
        names[device.upper()] = name
        names[device.upper()[:7]] = name
    return names


def conflict_diff(node: Node, item: ConflictItem) -> str:
    """Unified diff of the two bodies, pretty-printed for reading: from the version current
    now to the version set aside (for a deleted frame, from nothing; for a rollback, from
    the version in Git to the older one written back)."""
    root = node.layout.frames_shared
    if item.kind == "conflict":
        ours, theirs = _read(root / item.path), _read(root / item.copy_path)
        labels = (f"current version: {item.path} (by {item.ours_author})",
                  f"set-aside version: {item.copy_path} (by {item.theirs_author})")
    elif item.kind == "deleted":
        ours, theirs = b"", _read(root / item.copy_path)
        labels = (f"current version: {item.path} (deleted)",
                  f"set-aside version: {item.copy_path} (by {item.theirs_author})")
    elif item.undoes_delete:
        ours, theirs = b"", _read(root / item.path)
        labels = (f"current version: {item.path} (deleted by {item.ours_author})",
                  f"set-aside version: {item.path} (revision {(item.revision or '?')[:12]}, by {item.theirs_author})")
    elif item.kind == "rollback":
        with FrameRepo(node.layout.frames_git) as repo:
            ours = repo.show("HEAD", item.path)
        theirs = _read(root / item.path)
        labels = (f"current version: {item.path} in Git (by {item.ours_author})",
                  f"set-aside version: {item.path} written back (revision {(item.revision or '?')[:12]}, "
                  f"by {item.theirs_author})")
    else:
        return item.reason or ""
    return "".join(difflib.unified_diff(_body_lines(ours), _body_lines(theirs), *labels))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _body_lines(data: bytes) -> list[str]:
    try:
        body = json.loads(data).get("body")
    except (ValueError, AttributeError, RecursionError):
        return []
    return json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False).splitlines(True)


def select_conflicts(node: Node, ids: list[int], *, author: str | None = None,
                     namespace: str | None = None) -> list[ConflictItem]:
    """Items by id, or (bulk) every open frame conflict in a namespace, or whose set-aside
    version `author` wrote: a node name, or a device ID (that peer's name in trusted.toml, or
    the device Syncthing named the copy after)."""
    if ids:
        return [get_conflict(node, i) for i in ids]
    items = [i for i in list_conflicts(node) if i.kind == "conflict"]
    if author:
        devices = device_names(node)
        name = devices.get(author.upper()) or devices.get(author.upper()[:7]) or author
        items = [i for i in items if i.theirs_author == name or (i.device or "").upper() == author.upper()[:7]]
    if namespace:
        items = [i for i in items if (i.frame or "").startswith(namespace.rstrip("/") + "/")]
    return items


def decide(node: Node, items: list[ConflictItem], *, approve: bool) -> list[ConflictItem]:
    """Approve or reject each item; returns them as they are afterwards. Each decision on
    two versions is also a trace step of this node, so every peer learns who decided."""
    decided: list[ConflictItem] = []
    with pipeline_for(node) as pipeline:
        changed: list[str] = []
        with frames_lock(node.layout.home):
            db = open_state(node.layout.state_db)
            try:
                for item in items:
                    decision = pipeline.conflicts.approve if approve else pipeline.conflicts.reject
                    changed += decision(db, item)
                    decided.append(item)
            finally:
                db.close()
        pipeline.process(changed)
    with TraceDB(node.layout.trace_db, node.name) as trace:
        for item in decided:
            if item.kind in VERSION_KINDS:
                record_item_decision(trace, item.key, "approve" if approve else "reject",
                                     item.theirs_hash if approve else item.ours_hash)
    return [get_conflict(node, i.id) for i in items]

