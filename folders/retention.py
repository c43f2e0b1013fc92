"""Retention: which of this node's own segments and snapshots to keep, what an interrupted
publish left behind, and when a new snapshot is due (DESIGN §3 flow 3). Only this node's
folder is ever pruned; a peer's folder is receive-only here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from folders.errors import TraceError
from folders.files import TEMP_PREFIX, fsync_dir
from folders.segments import SEGMENTS_DIR
from folders.snapshots import SNAPSHOTS_DIR, segments_in, snapshots_in
from folders.trace import parse_ts


def prune(recovery_dir: Path, keep_snapshots: int) -> list[Path]:
    """Keep the newest `keep_snapshots` snapshots of this node's folder, and the segments
    after the oldest of them; returns the files deleted.

    Only pairs with a readable manifest are deleted, manifest first, so a peer never sees
    a manifest without its .db, and a .db still waiting for its manifest is never touched.
    """
    if keep_snapshots < 1:
        raise TraceError(f"Cannot prune {recovery_dir} down to {keep_snapshots} snapshots; keep "
                         "at least 1, or peers that fall behind cannot catch up.")
    recovery_dir = Path(recovery_dir)
    snapshots = [info for info in snapshots_in(recovery_dir) if info.size is not None]
    kept = snapshots[:keep_snapshots]
    deleted: list[Path] = []
    try:
        for info in snapshots[keep_snapshots:]:
            deleted += _delete_pair(info.manifest_path, info.db_path)
        if kept:
            floor = min(info.seq for info in kept)
            for path, manifest in list(segments_in(recovery_dir)):
                if manifest["seq"] <= floor:
                    deleted += _delete_pair(path, path.with_suffix(".db"))
    except OSError as exc:
        raise TraceError(f"Cannot prune {recovery_dir} ({exc}); check its permissions, then "
                         "prune again.") from None
    for folder in {path.parent for path in deleted}:
        fsync_dir(folder)
    return deleted


def _delete_pair(manifest_path: Path, db_path: Path) -> list[Path]:
    """Manifest first; a file already gone (another publish pruned it first) counts as pruned."""
    gone = []
    for path in (manifest_path, db_path):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        gone.append(path)
    return gone


def remove_leftovers(recovery_dir: Path, before: float) -> list[Path]:
    """Remove what a publish killed mid-way left in this node's own folder: our temporary
    files, and a segment or snapshot .db without its manifest; returns the files removed.

    Only files last changed before `before` (the current publish's start, as a time.time()
    value) are touched, so a piece being written right now is never one of them; the
    caller holds the publish lock, so no other publish of this node is writing. Without
    this a .db without manifest would sit in a synced folder for ever and be shipped to
    every peer, which can only wait on it.
    """
    removed: list[Path] = []
    for sub, pattern in ((SEGMENTS_DIR, "seg-*.db"), (SNAPSHOTS_DIR, "snap-*.db")):
        folder = Path(recovery_dir) / sub
        orphans = [p for p in folder.glob(pattern) if not p.with_suffix(".json").exists()]
        for path in [*folder.glob(f"{TEMP_PREFIX}*"), *orphans]:
            try:
                if path.is_symlink() or not path.is_file() or path.stat().st_mtime >= before:
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise TraceError(f"Cannot remove the leftover {path} of an interrupted publish "
                                 f"({exc.strerror}); check its permissions, then publish again.") from None
            removed.append(path)
    for folder in {path.parent for path in removed}:
        fsync_dir(folder)
    return removed


def due_for_snapshot(recovery_dir: Path, every_segments: int, every_minutes: int,
                     now: datetime) -> bool:
    """True when this node's folder wants a new snapshot.

    That is: no snapshot yet but some segment; or at least `every_segments` segments
    published since the newest snapshot; or `every_minutes` passed since it and at least
    one segment is newer. A limit of 0 or less turns that rule off.
    """
    snapshots = [info for info in snapshots_in(recovery_dir) if info.size is not None]
    seqs = [manifest["seq"] for _, manifest in segments_in(recovery_dir)]
    if not snapshots:
        return bool(seqs)
    newest = snapshots[0]
    newer = sum(1 for seq in seqs if seq > newest.seq)
    if newer == 0:
        return False
    if every_segments > 0 and newer >= every_segments:
        return True
    return every_minutes > 0 and now - parse_ts(newest.created) >= timedelta(minutes=every_minutes)
