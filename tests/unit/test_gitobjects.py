"""Commits written in-process (folders.gitobjects through FrameRepo) are the ones Git itself
would write: the same trees as `git add -A && git write-tree` over the same files, the same
commit sha as `git commit-tree`, a clean `git fsck --strict`, an index `git status` agrees
with, and refs moved only from the expected commit, packed or loose, with a reflog."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from folders import gitobjects, gitstore
from folders.gitobjects import STALE_LOCK_S, move_ref, object_id, parse_tree, tree_body
from folders.gitstore import FrameRepo, GitStoreError
from tests.unit.test_gitstore import T0, Clock

# Names chosen to hit Git's tree order, where a folder sorts as `name/`: `b-c/`, `b.c/`, `b/`
# and `b0` sort differently as folders than as files would.
FILES = ["a", "a.b", "a-b", "b/a", "b/a.b", "b.c/x", "b-c/y", "b/c/d", "b/c/e.f", "b0", "b/c-d",
         "bb/a", "ns/deep/er/still.frame.json", "é/ü.frame.json"]


def git(git_dir: Path, *args: str, env: dict | None = None, stdin: bytes | None = None) -> str:
    return subprocess.run(["git", "--git-dir", str(git_dir), *args], check=True, capture_output=True,
                          input=stdin, env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull,
                                            "GIT_CONFIG_NOSYSTEM": "1", **(env or {})}).stdout.decode()


def gits_own_tree(repo: FrameRepo, scratch: Path) -> str:
    """The tree Git makes of the whole work tree, through an index of its own."""
    env = {"GIT_INDEX_FILE": str(scratch / "index"), "GIT_WORK_TREE": str(repo.work_tree)}
    (scratch / "index").unlink(missing_ok=True)
    git(repo.git_dir, "add", "-A", env=env)
    return git(repo.git_dir, "write-tree", env=env).strip()


@pytest.fixture
def repo(tmp_path: Path):
    work = tmp_path / "frames.shared"
    work.mkdir()
    with FrameRepo.create(tmp_path / "frames.git", work, clock=Clock()) as r:
        yield r


batches = st.lists(st.dictionaries(st.sampled_from(FILES),
                                   st.one_of(st.none(), st.tuples(st.binary(max_size=40), st.booleans())),
                                   min_size=1, max_size=6),
                   min_size=1, max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=batches, checked=st.booleans(), pack_after=st.integers(0, 8), pack_min=st.sampled_from([1, 64]))
def test_every_commit_records_the_tree_git_would(repo, tmp_path, batches, checked, pack_after, pack_min):
    """Any sequence of adds, edits (executable or not) and deletes over nested folders: after
    each commit HEAD's tree is Git's own tree of the work tree, and the index agrees with it.
    Partway, `git gc` packs every object and ref, so later commits build on packed ones.
    With `pack_min` 1, every commit's new blobs go into a pack of their own."""
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    old_min, gitobjects.PACK_MIN = gitobjects.PACK_MIN, pack_min
    try:
        commit_each(repo, scratch, batches, checked, pack_after)
    finally:
        gitobjects.PACK_MIN = old_min
    git(repo.git_dir, "fsck", "--strict", "--no-dangling", "--no-progress")
    repo.sync_index()
    assert git(repo.git_dir, "--work-tree", str(repo.work_tree), "status", "--porcelain") == ""


def commit_each(repo, scratch, batches, checked, pack_after):
    for i, batch in enumerate(batches):
        if i == pack_after:
            git(repo.git_dir, "gc", "--quiet", "--prune=now")
        for rel, change in batch.items():
            path = repo.work_tree / rel
            if change is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(change[0])
                path.chmod(0o755 if change[1] else 0o644)
        before = repo.head()
        # Vouched as the pipeline vouches: each path's bytes as they are now, or gone.
        vouched = ({rel: None if change is None else object_id(b"blob", change[0]) for rel, change in batch.items()}
                   if checked else None)
        sha = repo.commit(batch, f"batch {i}", "laptop", vouched=vouched)
        tree = git(repo.git_dir, "rev-parse", "HEAD^{tree}").strip()
        assert tree == gits_own_tree(repo, scratch)
        assert (sha is None) == (repo.head() == before)
        if sha is not None:
            assert git(repo.git_dir, "rev-parse", "HEAD^").strip() == before


def test_a_commit_is_byte_for_byte_the_one_git_commit_tree_writes(repo):
    write = repo.work_tree / "ns" / "a.frame.json"
    write.parent.mkdir()
    write.write_text("{}\n")
    parent = repo.head()
    message = "frames: ns/a.frame.json\n\nno trailing newline here, ünïcode and a tab\tend"
    sha = repo.commit(["ns/a.frame.json"], message, "desk", when=T0)
    committed = T0 + timedelta(seconds=2)  # the Clock moved one second for `create` and one now
    env = {"GIT_AUTHOR_NAME": "desk", "GIT_AUTHOR_EMAIL": "desk@twinsync", "GIT_AUTHOR_DATE": f"@{int(T0.timestamp())} +0000",
           "GIT_COMMITTER_NAME": "twinsync", "GIT_COMMITTER_EMAIL": "twinsync@localhost",
           "GIT_COMMITTER_DATE": f"@{int(committed.timestamp())} +0000"}
    tree = git(repo.git_dir, "rev-parse", f"{sha}^{{tree}}").strip()
    theirs = git(repo.git_dir, "commit-tree", tree, "-p", parent, "-F", "-", env=env, stdin=message.encode()).strip()
    assert sha == theirs
    assert git(repo.git_dir, "log", "-1", "--format=%B", sha) == message + "\n"


def test_tree_bodies_round_trip_in_gits_order():
    tree = {b"b": (b"40000", "1" * 40), b"b0": (b"100644", "2" * 40), b"b.c": (b"100755", "3" * 40),
            b"b-c": (b"40000", "4" * 40), b"link": (b"120000", "5" * 40), b"sub": (b"160000", "6" * 40)}
    body = tree_body(tree)
    assert parse_tree(body) == tree
    names = [n for n in body.split(b"\0")[:-1]]
    assert [n.split(b" ", 1)[1] for n in names][:4] == [b"b-c", b"b.c", b"b", b"b0"]


def test_the_ref_moves_only_from_the_expected_commit(repo):
    head = repo.head()
    with pytest.raises(GitStoreError, match="another writer moved it first"):
        move_ref(repo.git_dir, "refs/heads/main", "1" * 40, "2" * 40, "t <t@x>", "wrong parent")
    assert repo.head() == head
    assert not (repo.git_dir / "refs/heads/main.lock").exists()
    with pytest.raises(GitStoreError, match="another writer moved it first"):
        move_ref(repo.git_dir, "refs/heads/main", "1" * 40, None, "t <t@x>", "must not exist yet")
    assert repo.head() == head


def test_a_commit_waits_for_a_held_lock_and_clears_a_stale_one(repo):
    """A lock held by a live writer is waited for and then refused, naming the file; one
    left by a writer killed mid-move is removed once it is old, and the commit goes in."""
    lock = repo.git_dir / "refs" / "heads" / "main.lock"
    lock.write_text("")
    (repo.work_tree / "a.frame.json").write_text("1")
    started = time.monotonic()
    with pytest.raises(GitStoreError, match="main.lock exists"):
        repo.commit(["a.frame.json"], "held", "laptop")
    assert time.monotonic() - started >= 0.9
    assert lock.exists()
    old = time.time() - STALE_LOCK_S - 1
    os.utime(lock, (old, old))
    sha = repo.commit(["a.frame.json"], "after a crash", "laptop")
    assert sha and repo.head() == sha and not lock.exists()


def test_every_move_is_in_the_reflogs(repo):
    (repo.work_tree / "a.frame.json").write_text("1")
    first = repo.commit(["a.frame.json"], "one\nbody", "laptop")
    git(repo.git_dir, "pack-refs", "--all")  # HEAD's branch now lives in packed-refs only
    assert not (repo.git_dir / "refs/heads/main").exists()
    (repo.work_tree / "a.frame.json").write_text("2")
    second = repo.commit(["a.frame.json"], "two", "laptop")
    for ref in ("HEAD", "main"):
        log = git(repo.git_dir, "reflog", "show", "--format=%H %gs", ref).splitlines()
        assert log[:2] == [f"{second} twinsync: two", f"{first} twinsync: one"]
    branch = repo.create_branch_with("fork/a", first, "a.frame.json", b"theirs", "their version", "desk")
    assert git(repo.git_dir, "reflog", "show", "--format=%H %gs", "fork/a").split("\n")[0] == \
        f"{branch} twinsync: fork fork/a"
    git(repo.git_dir, "fsck", "--strict", "--no-dangling", "--no-progress")


def test_the_index_catches_up_when_the_repository_closes(tmp_path):
    """A command that commits and closes (`frame put`) leaves `git status` clean."""
    work = tmp_path / "frames.shared"
    work.mkdir()
    with FrameRepo.create(tmp_path / "frames.git", work, clock=Clock()) as repo:
        (work / "ns").mkdir()
        (work / "ns" / "a.frame.json").write_text("{}")
        assert repo.commit(["ns/a.frame.json"], "add", "laptop")
        status = git(repo.git_dir, "--work-tree", str(work), "status", "--porcelain")
        assert "ns/" in status  # not yet: the commit did not touch the index
    assert git(repo.git_dir, "--work-tree", str(work), "status", "--porcelain") == ""


def test_an_object_that_cannot_be_written_fails_the_commit_and_moves_nothing(repo):
    content = b'{"n": 1}'
    sha = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
    (repo.git_dir / "objects" / sha[:2]).write_bytes(b"")  # a file where its folder must go
    (repo.work_tree / "a.frame.json").write_bytes(content)
    head = repo.head()
    with pytest.raises(GitStoreError, match=r"Cannot write a Git object into .*objects \(Not a directory\)"):
        repo.commit(["a.frame.json"], "add", "laptop")
    assert repo.head() == head
    (repo.git_dir / "objects" / sha[:2]).unlink()
    assert repo.commit(["a.frame.json"], "add", "laptop")
    git(repo.git_dir, "fsck", "--strict", "--no-dangling", "--no-progress")


def test_trees_dropped_from_a_small_cache_are_read_again(repo, tmp_path, monkeypatch):
    """With room for a few entries only, every commit reads most of its trees back (loose,
    then packed by gc) and still records Git's own tree."""
    monkeypatch.setattr(gitobjects, "_TREES", gitobjects._TreeCache(4))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for i in range(24):
        if i == 12:
            git(repo.git_dir, "gc", "--quiet", "--prune=now")
        rel = f"ns{i % 6}/sub{i % 4}/f{i % 5}.frame.json"
        (repo.work_tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo.work_tree / rel).write_text(str(i))
        assert repo.commit([rel], f"c{i}", "laptop")
        assert git(repo.git_dir, "rev-parse", "HEAD^{tree}").strip() == gits_own_tree(repo, scratch)
    assert gitobjects._TREES._size <= 4 + max(len(t) + 1 for t in gitobjects._TREES._trees.values())


def packs(repo) -> list[Path]:
    return sorted((repo.git_dir / "objects" / "pack").glob("pack-*.pack"))


def test_a_big_batch_is_one_pack_of_the_objects_git_lacks(repo, tmp_path):
    """300 files, some alike, some committed already: one new pack holding exactly the new
    blobs, which Git verifies, and the tree Git itself would make."""
    work = repo.work_tree
    (work / "old").mkdir()
    for i in range(10):
        (work / "old" / f"{i}.frame.json").write_text(f"old {i}")
    repo.commit([f"old/{i}.frame.json" for i in range(10)], "loose", "laptop")
    assert packs(repo) == []
    rels = []
    for i in range(300):
        rel = f"ns{i % 7}/sub{i % 3}/f{i}.frame.json"
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(f"old {i % 10}" if i < 20 else f"new {i % 250}")  # 20 known, 250 new
        rels.append(rel)
    assert repo.commit(rels, "big", "laptop")
    [pack] = packs(repo)
    listing = git(repo.git_dir, "verify-pack", "-v", str(pack.with_suffix(".idx")))
    assert sum(" blob " in line for line in listing.splitlines()) == 250
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert git(repo.git_dir, "rev-parse", "HEAD^{tree}").strip() == gits_own_tree(repo, scratch)
    git(repo.git_dir, "fsck", "--strict", "--no-dangling", "--no-progress")


def test_a_batch_bigger_than_a_chunk_is_stored_a_chunk_at_a_time(repo, tmp_path, monkeypatch):
    monkeypatch.setattr(gitstore, "CHUNK_BYTES", 100 * 100)
    rels = []
    for i in range(300):
        rel = f"ns/f{i:03d}.frame.json"
        (repo.work_tree / "ns").mkdir(exist_ok=True)
        (repo.work_tree / rel).write_text(f"{i:03d}" * 33 + "\n")  # 100 bytes
        rels.append(rel)
    assert repo.commit(rels, "chunks", "laptop")
    assert len(packs(repo)) == 3
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert git(repo.git_dir, "rev-parse", "HEAD^{tree}").strip() == gits_own_tree(repo, scratch)
    git(repo.git_dir, "fsck", "--strict", "--no-dangling", "--no-progress")
