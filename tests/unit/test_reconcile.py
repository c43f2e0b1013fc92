"""The reconcile's comparison (`stale_paths`) and Git's file list (`FrameRepo.tracked`) against
the straightforward versions they replaced, over generated trees: a speed-up that changes
the set of changed paths would make the daemon miss or redo work."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from folders.files import TEMP_PREFIX
from folders.gitstore import FrameRepo
from orchestrator.pipeline import SYNCTHING_MARKERS, classify, stale_paths, walk_files
from syncthing.conflicts import is_conflict_copy, is_syncthing_internal, is_syncthing_temp

#: Names that exercise every branch of `classify` and of the walk.
NAMES = ["a.frame.json", "b.frame.json", "notes.txt", ".stignore", ".stfolder", ".stversions",
         ".syncthing.a.frame.json.tmp", "~syncthing~b.tmp", f"{TEMP_PREFIX}c", ".hidden.frame.json",
         "a.sync-conflict-20261207-101010-ABCDEFG.frame.json", "ns", "x"]
KINDS = ["file", "dir", "link"]


def old_classify(rel: str) -> str:
    name = rel.rsplit("/", 1)[-1]
    if (is_syncthing_internal(rel) or is_syncthing_temp(name) or name.startswith(TEMP_PREFIX)
            or name in SYNCTHING_MARKERS):
        return "ignore"
    return "conflict" if is_conflict_copy(name) else "frame"


def old_changed(root: Path, indexed: dict[str, tuple[int, int]], tracked: set[str]) -> set[str]:
    """`changed_on_disk` as it was before the reconcile was made faster."""
    changed, seen = set(), set()
    for rel, entry in walk_files(root):
        if old_classify(rel) == "ignore":
            continue
        info = entry.stat(follow_symlinks=False)
        seen.add(rel)
        if indexed.get(rel) != (info.st_size, info.st_mtime_ns):
            changed.add(rel)
    return changed | ((set(indexed) | tracked) - seen)


def build(root: Path, entries: list[tuple[tuple[str, ...], str, int]]) -> None:
    for parts, kind, size in entries:
        path = root.joinpath(*parts)
        if any(p.is_symlink() or (p.exists() and not p.is_dir()) for p in path.parents if p != root.parent):
            continue  # a file or link already stands where a folder would go
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(path):
            continue
        if kind == "file":
            path.write_bytes(b"x" * size)
        elif kind == "dir":
            path.mkdir()
            (path / "inner.frame.json").write_bytes(b"y" * size)
        else:
            path.symlink_to("a.frame.json")


entry = st.tuples(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(tuple),
                  st.sampled_from(KINDS), st.integers(0, 3))
#: What the index holds for a path: its true stat, a stale one, or a row for a file long gone.
row = st.sampled_from(["true", "size", "mtime"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=st.lists(entry, max_size=12), rows=st.lists(row, max_size=30),
       extra=st.lists(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join), max_size=4),
       tracked_every=st.integers(1, 3), workers=st.integers(2, 4))
def test_stale_paths_finds_exactly_what_the_old_comparison_found(entries, rows, extra, tracked_every, workers):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "frames.shared"
        root.mkdir()
        build(root, entries)
        on_disk = sorted((rel, entry.stat(follow_symlinks=False)) for rel, entry in walk_files(root))
        indexed: dict[str, tuple[int, int]] = {}
        for (rel, info), how in zip(on_disk, rows):
            size, mtime = info.st_size, info.st_mtime_ns
            indexed[rel] = (size + (how == "size"), mtime + (how == "mtime"))
        for rel in extra:  # the index or Git know it; the disk may not
            indexed.setdefault(rel, (1, 1))
        tracked = {rel for i, (rel, _) in enumerate(on_disk) if i % tracked_every == 0} | set(extra[:2])

        expected = old_changed(root, indexed, tracked)
        assert stale_paths(root, indexed, lambda: tracked) == expected
        # The same split between forked children, however many.
        assert stale_paths(root, indexed, lambda: tracked, workers=workers, fork_above=0) == expected
        assert {rel for rel, _ in on_disk if classify(rel) != old_classify(rel)} == set()


def test_stale_paths_reports_a_deleted_frame_git_still_holds_and_a_changed_one(tmp_path):
    root = tmp_path / "frames.shared"
    (root / "ns").mkdir(parents=True)
    (root / "ns" / "kept.frame.json").write_text("kept")
    (root / "ns" / "edited.frame.json").write_text("edited")
    (root / "ns" / "dir.frame.json").mkdir()
    (root / ".stfolder").mkdir()
    (root / ".stignore").write_text("")
    (root / "ns" / ".syncthing.kept.frame.json.tmp").write_text("partial")

    def row(rel: str, bump: int = 0) -> tuple[str, tuple[int, int]]:
        info = os.lstat(root / rel)
        return rel, (info.st_size, info.st_mtime_ns + bump)

    indexed = dict([row("ns/kept.frame.json"), row("ns/edited.frame.json", bump=1), ("ns/gone.frame.json", (3, 3))])
    tracked = ["ns/kept.frame.json", "ns/deleted-in-git.frame.json"]
    assert stale_paths(root, indexed, lambda: tracked) == {
        "ns/edited.frame.json", "ns/gone.frame.json", "ns/deleted-in-git.frame.json", "ns/dir.frame.json"}


def old_tracked(repo: FrameRepo, git_dir: Path) -> dict[str, str]:
    out = subprocess.run(["git", f"--git-dir={git_dir}", "ls-tree", "-r", "-z", "--full-tree", "HEAD"],
                         capture_output=True, check=True).stdout
    result = {}
    for item in out.split(b"\0"):
        if not item:
            continue
        meta, _, path = item.partition(b"\t")
        _mode, kind, sha = meta.split(b" ")
        if kind == b"blob":
            result[os.fsdecode(path)] = sha.decode()
    return result


def test_tracked_lists_blobs_and_links_but_not_submodules_whatever_their_names(tmp_path):
    work = tmp_path / "frames.shared"
    git_dir = tmp_path / "frames.git"
    repo = FrameRepo.create(git_dir, work)
    try:
        names = ["ns/plain.frame.json", "ns/tab\there.frame.json", "ns/new\nline.frame.json",
                 "ns/ünï.frame.json", os.fsdecode(b"ns/bad-\xff-utf8.frame.json")]
        for name in names:
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_bytes(os.fsencode(name))
        (work / "ns" / "link.frame.json").symlink_to("plain.frame.json")
        repo.commit([*names, "ns/link.frame.json"], "frames", "laptop")
        repo.sync_index()  # the submodule entry below is made through the index
        env = {**os.environ, "GIT_DIR": str(git_dir), "GIT_WORK_TREE": str(work)}
        subprocess.run(["git", "update-index", "--add", "--cacheinfo", f"160000,{repo.head()},ns/sub"],
                       env=env, check=True)
        tree = subprocess.run(["git", "write-tree"], env=env, capture_output=True, text=True, check=True).stdout.strip()
        commit = subprocess.run(["git", "commit-tree", tree, "-p", repo.head(), "-m", "sub"], env=env,
                                capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run(["git", "update-ref", "HEAD", commit], env=env, check=True)

        tracked = repo.tracked()
        assert tracked == old_tracked(repo, git_dir)
        assert set(tracked) == {*names, "ns/link.frame.json"} and "ns/sub" not in tracked
    finally:
        repo.close()
