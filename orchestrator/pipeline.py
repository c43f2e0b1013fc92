"""Flow 1 of DESIGN §3: a batch of changed paths → classify → validate → commit → index →
ask Syncthing to scan, so peers get the change at once instead of after its watcher delay.

The rule that protects data: only a path whose current file is a valid frame (or that is
gone) is ever staged, so an invalid file can never replace the last good version in Git.
A valid frame that is an older revision written back over a newer one (a rollback) is not
staged either: it waits in the queue for a person (approve commits it, reject undoes it).
A deleted frame leaves a tombstone (its last version, who deleted it and when), so a version
from before the delete that comes back is a rollback too: Syncthing 2.x forgets deletions
after a retention interval, and a node offline for longer brings such a frame back as a
plain new file. A version that is not in the frame's history (an edit of the deleted
version, or any newer signed edit) is a new frame and is committed.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from pathlib import Path

from folders.files import TEMP_PREFIX
from folders.frame import FRAME_SUFFIX, Frame
from folders.gitstore import FrameRepo, GitStoreError
from folders.trace import utc_now
from folders.validator import Judge, Verdict, VerdictCache
from orchestrator.conflicts import ConflictQueue
from orchestrator.forked import Forked, ForkedError, cores
from orchestrator.lock import frames_lock
from orchestrator.node import Node
from orchestrator.state import open_state, read_state, stamp, upsert
from orchestrator.tombstones import UNKNOWN, Tombstone, signed_version
from orchestrator.verifier import VerifierPool
from syncthing.conflicts import TEMP_PREFIXES, is_conflict_copy, is_syncthing_internal
from syncthing.errors import SyncthingError
from syncthing.folderspec import FRAMES_FOLDER_ID

logger = logging.getLogger(__name__)

#: Past this many changed paths one whole-folder scan is cheaper than a list of subs.
MAX_SCAN_SUBS = 200
#: Syncthing's own files at the root of a namespace folder (sharded and p2p topologies).
SYNCTHING_MARKERS = frozenset({".stfolder", ".stignore", ".stversions"})
#: Author of commits that record deletions: a deletion carries no signature to name one.
DELETION_AUTHOR = "twinsync"
#: Syncthing is asked who deleted a frame for at most this many deletions of one batch; the
#: rest of a mass delete is recorded as deleted by UNKNOWN.
DELETER_LOOKUPS = 20


def classify(rel: str) -> str:
    """`ignore` | `conflict` | `frame`: what a path in frames.shared/ is to twinsync."""
    name = rel.rsplit("/", 1)[-1]
    if is_syncthing_internal(rel) or _ignored_name(name):
        return "ignore"
    if is_conflict_copy(name):
        return "conflict"
    return "frame"


def _ignored_name(name: str) -> bool:
    """The part of `classify` that a base name decides: Syncthing's temporary files and
    markers and our own temporary files. `walk_files` never enters Syncthing's internal
    folders, so for a path it yields this is the whole of `classify`'s `ignore`."""
    return name.startswith(_IGNORED_PREFIXES) or name in SYNCTHING_MARKERS


_IGNORED_PREFIXES = (*TEMP_PREFIXES, TEMP_PREFIX)


@dataclass
class BatchReport:
    committed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    rollbacks: list[str] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One log line: what the batch held, then what Git got ("3 valid frames; 1 Git commit",
        "1 valid frame; already in Git"), naming only what there was."""
        held = [_count(len(self.committed), "valid frame"), _count(len(self.deleted), "deleted frame"),
                _count(len(self.invalid), "invalid file"), _count(len(self.conflicts), "conflict copy", "conflict copies"),
                _count(len(self.rollbacks), "rollback held", "rollbacks held")]
        held = [part for part in held if part] or ["nothing to check"]
        git = (_count(len(self.commits), "Git commit") if self.commits
               else "already in Git" if self.committed or self.deleted else "no Git commit")
        return f"{', '.join(held)}; {git}"


def _count(n: int, one: str, many: str | None = None) -> str:
    """'1 valid frame', '3 valid frames', '' for none."""
    if not n:
        return ""
    return f"{n} {one if n == 1 else many or one + 's'}"


class FramePipeline:
    """Owns the frame repo, the verdict cache and the frame index for one node home."""

    def __init__(self, node: Node, repo: FrameRepo, *, clock: Callable[[], datetime] = utc_now,
                 judge: Judge | None = None) -> None:
        self.node = node
        self.repo = repo
        self.root = node.layout.frames_shared
        self.clock = clock
        self.cache = VerdictCache()
        self.judge = judge or VerifierPool()
        self.trusted = node.trusted_keys()
        self.conflicts = ConflictQueue(node, repo, self.cache, clock=clock)
        self._pending_scan: set[str] = set()
        self._scan_retry_at = 0.0
        self._scan_backoff = 1.0
        self._syncthing_down = False

    def reload_trust(self) -> None:
        self.trusted = self.node.trusted_keys()

    # -- the batch ---------------------------------------------------------------------

    def process(self, paths: Iterable[str], *, synced: Collection[str] = ()) -> BatchReport:
        """The index is written after the commits: a crash in between leaves an index that
        disagrees with the disk, so the next reconcile redoes the batch (Git then finds
        nothing new to commit for what did get committed, so nothing is committed twice).

        Syncthing is asked to scan the changed paths before the Git commit: the files are
        whole on disk already (its own watcher would send them anyway), so peers need not
        wait for the commit here. `synced` are paths Syncthing itself just wrote whole (its
        ItemFinished), or was asked to scan already (a put): asking again would only cost a
        request and a rescan on the path of every frame."""
        report = BatchReport()
        with frames_lock(self.node.layout.home):
            db = open_state(self.node.layout.state_db)
            try:
                by_author: dict[str, list[str]] = defaultdict(list)
                rows: list[dict] = []
                wanted = sorted(set(paths))
                indexed = {r[0]: (r[1], r[2]) for r in db.execute(
                    "SELECT path, status, hash FROM frames WHERE path IN (SELECT value FROM json_each(?))",
                    [json.dumps(wanted)])}
                tombstones = self._standing_tombstones(db, wanted)
                kinds = {rel: classify(rel) for rel in wanted}
                looks = {rel: self._look(rel) for rel in wanted if kinds[rel] == "frame"}
                judged = {rel: Path(rel) for rel, look in looks.items() if isinstance(look, os.stat_result)}
                verdicts = self.cache.validate_many(self.root, judged.values(), self.trusted,
                                                    self.node.config.frames.max_size, judge=self.judge)
                for rel in wanted:
                    if kinds[rel] == "conflict":
                        self.conflicts.handle_copy(db, rel, self.trusted)
                        report.conflicts.append(rel)
                    elif kinds[rel] == "frame":
                        verdict = verdicts[judged[rel]] if rel in judged else None
                        row = self._frame(db, rel, looks[rel], verdict, indexed.get(rel),
                                          tombstones.get(rel), by_author, report)
                        if row:
                            rows.append(row)
                buried = self._tombstones(report.deleted, indexed, tombstones)
                self.request_scan(p for p in report.committed + report.deleted + report.conflicts
                                  if p not in synced)
                # What was judged, and only that, goes into Git: a file rewritten since is left
                # out of the commit, and its own change event brings it back to a batch.
                vouched = {**{rel: None for rel in report.deleted},
                           **{rel: verdicts[judged[rel]].blob for rel in report.committed}}
                for author, changed in sorted(by_author.items()):
                    sha = self.repo.commit(changed, _message(changed), author, when=self.clock(), vouched=vouched)
                    if sha:
                        report.commits.append(sha)
                with db.conn:
                    self.conflicts.close_invalid_many(db, report.committed, "the file is valid now")
                    self.conflicts.close_invalid_many(db, report.deleted, "the file is gone")
                    self.conflicts.follow_originals(db, report.committed, report.deleted)
                    db.execute("DELETE FROM frames WHERE path IN (SELECT value FROM json_each(?))",
                               [json.dumps(report.deleted)])
                    upsert(db.conn, "frames", rows, "path")
                    db.execute("DELETE FROM tombstones WHERE path IN (SELECT value FROM json_each(?))",
                               [json.dumps([rel for rel in report.committed if rel in tombstones])])
                    upsert(db.conn, "tombstones", buried, "path")
                self.repo.sync_index()
            finally:
                db.close()
        return report

    @staticmethod
    def _standing_tombstones(db, wanted: list[str]) -> dict[str, Tombstone]:
        """The batch's paths that are deleted frames; a home with no deletions pays one read."""
        if db.execute("SELECT 1 FROM tombstones LIMIT 1").fetchone() is None:
            return {}
        return {r["path"]: Tombstone.from_row(r) for r in db.execute_returning_dicts(
            "SELECT * FROM tombstones WHERE path IN (SELECT value FROM json_each(?))", [json.dumps(wanted)])}

    def _look(self, rel: str) -> os.stat_result | str:
        """A frame path's lstat, taken before the batch's files are judged (so a file that
        changes meanwhile leaves a stale index row and the next reconcile looks again), or
        why it is not judged: `gone`, or `folder` for a folder not named like a frame."""
        path = f"{self.root}/{rel}"
        try:
            st = os.lstat(path)
        except OSError:  # what os.path.lexists counts as absent
            return "gone"
        if ((stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode) and os.path.isdir(path))
                and not Path(path).name.endswith(FRAME_SUFFIX)):
            return "folder"
        return st

    def _frame(self, db, rel: str, st: os.stat_result | str, verdict: Verdict | None,
               indexed: tuple[str, str | None] | None, tombstone: Tombstone | None,
               by_author: dict[str, list[str]], report: BatchReport) -> dict | None:
        if st == "gone":
            by_author[DELETION_AUTHOR].append(rel)  # the repo skips what Git never had
            report.deleted.append(rel)
            return None
        if verdict is None:  # a folder not named like a frame
            return None
        row = {"path": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "updated": stamp(self.clock()),
               "code": str(verdict.code)}
        if verdict.ok and self._is_rollback(db, rel, verdict.frame, indexed, tombstone):
            row.update(frame_id=verdict.frame.id, hash=verdict.frame.hash, status="rollback")
            report.rollbacks.append(rel)
        elif verdict.ok:
            row.update(frame_id=verdict.frame.id, hash=verdict.frame.hash, status="valid")
            by_author[verdict.frame.author].append(rel)
            report.committed.append(rel)
        else:
            row.update(frame_id=None, hash=None, status="invalid")
            report.invalid.append(rel)
            self.conflicts.open_invalid(db, rel, str(verdict.code), verdict.message)
            logger.warning("%s", verdict.message)
        return row

    def _is_rollback(self, db, rel: str, frame: Frame, indexed: tuple[str, str | None] | None,
                     tombstone: Tombstone | None) -> bool:
        """Queues (and returns True for) a valid frame whose hash is an older revision of its
        path in Git while HEAD holds another version, or while the frame is deleted (its
        tombstone stands and HEAD does not hold the path). Git is asked only when the index or
        a tombstone says the path held something else that this frame does not name as a
        parent, so ordinary edits and new frames cost nothing more."""
        if indexed is None and tombstone is None:
            return False
        if indexed is not None:
            status, known = indexed
            if status == "valid" and (known == frame.hash or known in frame.parents):
                return False
        if tombstone is not None and tombstone.hash in frame.parents:
            return False  # an edit of the deleted version: the frame lives on
        if self.conflicts.holds_version(db, rel, frame.hash):
            return False
        versions = self.repo.versions(rel)
        newest = next(versions, None)
        if newest is None:
            return False
        if tombstone is not None and not self.repo.holds(rel):
            older, current = chain([newest], versions), None  # every version is from before the delete
        elif (current := signed_version(newest[1])) is None or current[0] == frame.hash:
            return False
        else:
            older = versions
        for commit, content in older:
            if (old := signed_version(content)) is not None and old[0] == frame.hash:
                self.conflicts.open_rollback(db, rel, frame.id, commit, old, current,
                                             None if current else tombstone)
                return True
        return False

    def _tombstones(self, deleted: list[str], indexed: dict[str, tuple[str, str | None]],
                    standing: dict[str, Tombstone]) -> list[dict]:
        """Rows for the frames this batch deletes: the last version Git holds (the index's, when
        it was valid), who deleted it (Syncthing's `modifiedBy`, named) and when. A path with
        a tombstone already (a held rollback deleted again) keeps it."""
        if not deleted:
            return []
        rows, lookups = [], DELETER_LOOKUPS
        names = {peer.device_id[:7]: name for name, peer in self.node.peers().items()}
        names[self.node.config.device_id[:7]] = self.node.name
        for rel in deleted:
            status, known = indexed.get(rel, (None, None))
            if status != "valid":
                if rel in standing:
                    continue
                known = self._head_hash(rel)
            if known is None:
                continue  # never committed: nothing to come back
            who = None
            if lookups > 0:
                lookups -= 1
                who = self._deleter(rel, names)
                if who is None:
                    lookups = 0  # Syncthing does not answer: do not wait on it for every path
            rows.append({"path": rel, "frame_id": rel.removesuffix(FRAME_SUFFIX), "hash": known,
                         "deleted_at": stamp(self.clock()), "deleted_by": who or UNKNOWN})
        return rows

    def _head_hash(self, rel: str) -> str | None:
        try:
            signed = signed_version(self.repo.show("HEAD", rel))
        except GitStoreError:
            return None
        return signed[0] if signed else None

    def _deleter(self, rel: str, names: dict[str, str]) -> str | None:
        """The node whose Syncthing deleted `rel`; this node when Syncthing still has the file
        (its scan has not seen the delete made here yet); None when Syncthing does not answer."""
        try:
            info = self.node.client.file(FRAMES_FOLDER_ID, rel)
        except SyncthingError:
            return None
        if info is None:
            return UNKNOWN  # not in the frames folder (a namespace folder's own)
        glob = info.get("global") or {}
        if not glob.get("deleted"):
            return self.node.name
        device = str(glob.get("modifiedBy") or "")
        return names.get(device, f"device {device}" if device else None)

    # -- telling Syncthing -------------------------------------------------------------

    def request_scan(self, paths: Iterable[str]) -> None:
        self._pending_scan.update(paths)
        self.flush_scans()

    def flush_scans(self) -> None:
        """Ask Syncthing to scan what changed; when it is down, say so once and back off."""
        if not self._pending_scan or time.monotonic() < self._scan_retry_at:
            return
        subs = sorted(self._pending_scan)
        try:
            self.node.client.scan(FRAMES_FOLDER_ID, None if len(subs) > MAX_SCAN_SUBS else subs)
        except SyncthingError as exc:
            if not self._syncthing_down:
                logger.warning("%s Frames are still committed here and will be announced when "
                               "Syncthing answers again.", exc)
            self._syncthing_down = True
            self._scan_retry_at = time.monotonic() + self._scan_backoff
            self._scan_backoff = min(self._scan_backoff * 2, 60.0)
            return
        if self._syncthing_down:
            logger.info("Syncthing answers again; announced %d pending change(s)", len(subs))
        self._syncthing_down = False
        self._scan_backoff = 1.0
        self._pending_scan.clear()

    # -- reconcile ---------------------------------------------------------------------

    def changed_on_disk(self) -> set[str]:
        """Paths whose disk state differs from the index, or that the index or Git know but
        the disk no longer has: stat only, so 100k unchanged frames cost one directory walk."""
        return stale_paths(self.root, indexed_stats(self.node.layout.state_db), self.repo.tracked,
                           workers=cores())


def indexed_stats(state_db: Path) -> dict[str, tuple[int, int]]:
    """The index as the reconcile compares it: path -> (size, mtime_ns)."""
    db = read_state(state_db)
    try:
        return {path: (size, mtime) for path, size, mtime in db.execute("SELECT path, size, mtime_ns FROM frames")}
    finally:
        db.close()


#: Below this many indexed frames the reconcile walks in the daemon: forking costs about
#: 10 ms, what walking 2,000 files does.
FORK_ABOVE = 10_000
#: A walk's child that has not answered in this long is stuck or dead: 100k files take
#: under a second, and walking in the daemon is always correct, only slower.
WALK_STALL_S = 120.0


def stale_paths(root: Path, indexed: Mapping[str, tuple[int, int]], tracked: Callable[[], Iterable[str]],
                *, workers: int = 1, fork_above: int = FORK_ABOVE) -> set[str]:
    """The reconcile's comparison: files under `root` whose (size, mtime_ns) is not what
    `indexed` holds for them, paths indexed that the walk did not find, and paths `tracked`
    that are not indexed (a file Git holds but the disk lacks is then new or gone either way).

    With `workers` cores and more than `fork_above` indexed paths, each of `workers` forked
    children stats its own share of the files, while `tracked` (Git's listing) is read here:
    the stat calls are most of a reconcile and overlap only across processes."""
    if workers < 2 or len(indexed) <= fork_above:
        return stale_share(str(root), indexed) | (set(tracked()) - indexed.keys())
    git_only: set[str] | None = None
    try:
        with Forked(stale_share, [(str(root), indexed, k, workers) for k in range(workers)]) as shares:
            git_only = set(tracked()) - indexed.keys()
            return set().union(*shares.results(WALK_STALL_S)) | git_only
    except ForkedError as exc:
        logger.warning("The reconcile's walkers %s; walking frames.shared/ in the daemon instead.", exc)
    if git_only is None:  # the walkers could not even start
        git_only = set(tracked()) - indexed.keys()
    return stale_share(str(root), indexed) | git_only


def stale_share(root: str, indexed: Mapping[str, tuple[int, int]], share: int = 0, shares: int = 1) -> set[str]:
    """One share of the reconcile (the paths whose `hash() % shares` is `share`, the same in
    every child forked from one process): its files whose (size, mtime_ns) is not the
    indexed one, and its indexed paths that the walk did not find. A file gone between the
    listing and its stat counts as not found."""
    stale, seen = set(), set()
    for rel, entry in walk_files(root):
        if hash(rel) % shares != share or _ignored_name(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        seen.add(rel)
        if indexed.get(rel) != (st.st_size, st.st_mtime_ns):
            stale.add(rel)
    stale.update(rel for rel in indexed if hash(rel) % shares == share and rel not in seen)
    return stale


def walk_files(root: Path | str) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Files under root (a directory named like a frame counts as one), skipping Syncthing's
    own folders, as (path relative to root, its directory entry, not yet stat-ed). Plain
    strings, not pathlib: this walks 100k files at every reconcile."""
    stack = [("", str(root))]
    while stack:
        prefix, directory = stack.pop()
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except OSError:
            continue
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_dir(follow_symlinks=False) and not entry.name.endswith(FRAME_SUFFIX):
                if not is_syncthing_internal(rel) and entry.name not in SYNCTHING_MARKERS:
                    stack.append((rel + "/", entry.path))
                continue
            yield rel, entry


#: Paths listed in a commit message; Git's own history has the full list.
MESSAGE_PATHS = 100


def _message(paths: list[str]) -> str:
    head = ", ".join(p.removesuffix(FRAME_SUFFIX) for p in paths[:3])
    more = f" (+{len(paths) - 3} more)" if len(paths) > 3 else ""
    body = "\n".join(paths[:MESSAGE_PATHS])
    if len(paths) > MESSAGE_PATHS:
        body += f"\n… and {len(paths) - MESSAGE_PATHS} more (see `git show --stat`)"
    return f"frames: {head}{more}\n\n{body}\n"
