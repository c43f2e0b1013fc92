"""kill -9 of a process writing commits in-process (folders.gitobjects through FrameRepo),
wherever it lands: mid-object, mid-pack, mid-ref-move, mid-reflog. Git must find the repository sound
every time, and the next writer must commit on top of HEAD."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from folders.gitobjects import STALE_LOCK_S
from folders.gitstore import FrameRepo
from tests.unit.test_gitobjects import git
from tests.unit.test_gitstore import Clock

pytestmark = pytest.mark.faults


@pytest.fixture
def repo(tmp_path: Path):
    work = tmp_path / "frames.shared"
    work.mkdir()
    with FrameRepo.create(tmp_path / "frames.git", work, clock=Clock()) as r:
        yield r


CHILD = """
import sys, itertools
from folders.gitstore import FrameRepo
repo = FrameRepo(sys.argv[1])
print("ready", flush=True)
for i in itertools.count():
    # every fifth commit is a burst of 80 files: those blobs are written as one pack
    rels = [f"ns{i % 7}/f{(i + k) % 13}-{k}.frame.json" for k in range(80 if i % 5 == 4 else 1)]
    for rel in rels:
        path = repo.work_tree / rel
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"{i} {rel}")
    repo.commit(rels, f"commit {i}", "laptop")
"""


def test_a_writer_killed_at_any_moment_leaves_a_sound_history(repo):
    """kill -9 lands wherever it lands (mid-object, mid-pack, mid-ref-move, mid-reflog): every time,
    HEAD is a whole commit Git accepts, and the next commit goes in (a ref lock the dead
    writer left is old by then and is cleared)."""
    rng = random.Random(7)
    for _ in range(20):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(repo.git_dir)], stdout=subprocess.PIPE,
                                 cwd=Path(__file__).parents[2])
        assert child.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.02, 0.3))  # the moment of the kill is what varies
        child.kill()
        child.wait()
        lock = repo.git_dir / "refs" / "heads" / "main.lock"
        if lock.exists():
            old = time.time() - STALE_LOCK_S - 1
            os.utime(lock, (old, old))
        git(repo.git_dir, "fsck", "--strict", "--no-progress")
        (repo.work_tree / "after.frame.json").write_text(str(rng.random()))
        head = repo.head()
        sha = repo.commit(["after.frame.json"], "after the kill", "laptop")
        assert sha and git(repo.git_dir, "rev-parse", f"{sha}^").strip() == head
    assert int(git(repo.git_dir, "rev-list", "--count", "HEAD")) > 20
    assert list((repo.git_dir / "objects" / "pack").glob("pack-*.idx"))  # bursts were packed
