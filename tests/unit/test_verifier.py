"""Verification on every core: `VerifierPool` judges a batch in forked workers and must give
exactly the verdicts `validate_frame_file` gives one by one (good and bad files mixed), keep
the cache's behaviour, and finish a batch when a worker is killed. Real files under tmp_path,
real processes; nothing of ours is replaced."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from folders.frame import Frame, save_frame
from folders.validator import VerdictCache, judge_one_by_one
from orchestrator.forked import FORK
from orchestrator.verifier import EXIT_S, VerifierPool, _end_stragglers
from tests.conftest import wait_for

LAPTOP = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()
TRUSTED = {"laptop": LAPTOP.public_key()}
CREATED = datetime(2026, 12, 7, 8, 0, tzinfo=timezone.utc)
MAX_SIZE = 4096


def frame(frame_id: str, key=LAPTOP, author: str = "laptop", n: int = 0) -> Frame:
    return Frame.create(frame_id, author, {"n": n, "text": f"frame {frame_id}"}, key, created=CREATED)


def mixed_tree(root: Path, good: int = 40) -> list[Path]:
    """Good frames with every kind of bad file among them; the paths, in batch order."""
    rels = []
    for i in range(good):
        save_frame(root, frame(f"ns{i % 3}/f{i:04d}", n=i))
        rels.append(f"ns{i % 3}/f{i:04d}.frame.json")
    forged = frame("bad/forged").to_dict() | {"body": {"n": 666}}
    bad = {
        "bad/forged.frame.json": json.dumps(forged).encode(),
        "bad/stranger.frame.json": json.dumps(frame("bad/stranger", STRANGER).to_dict()).encode(),
        "bad/untrusted.frame.json": json.dumps(frame("bad/untrusted", STRANGER, "mallory").to_dict()).encode(),
        "bad/json.frame.json": b'{"half": ',
        "bad/empty.frame.json": b"",
        "bad/big.frame.json": b" " * (MAX_SIZE + 1),
        "bad/moved.frame.json": json.dumps(frame("ns0/f0000").to_dict()).encode(),
        "bad/notes.txt": b"not a frame",
    }
    for rel, data in bad.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        rels.append(rel)
    (root / "bad" / "link.frame.json").symlink_to("../ns0/f0000.frame.json")
    (root / "bad" / "dir.frame.json").mkdir()
    os.mkfifo(root / "bad" / "fifo.frame.json")
    rels += ["bad/link.frame.json", "bad/dir.frame.json", "bad/fifo.frame.json", "bad/missing.frame.json"]
    return [Path(rel) for rel in sorted(rels)]


def test_the_pool_gives_exactly_the_verdicts_judged_one_by_one(tmp_path):
    paths = mixed_tree(tmp_path)
    expected = judge_one_by_one(tmp_path, paths, TRUSTED, MAX_SIZE)
    pool = VerifierPool(2, inline_below=2, chunk=7)
    assert pool(tmp_path, paths, TRUSTED, MAX_SIZE) == expected
    assert sum(v.ok for _, v in expected) == 40 and len({v.code for _, v in expected}) >= 10
    assert all(stamp is not None for stamp, v in expected if v.ok)


def test_a_file_changed_while_it_is_judged_is_judged_again(tmp_path):
    """The judge stamps a file before reading it (the cache never stamps a file it never
    saw), so a change during judging leaves an older stamp and the next look judges again."""
    paths = mixed_tree(tmp_path)
    changed = Path("ns1/f0001.frame.json")

    def changing(root, todo, trusted, max_size):
        judged = VerifierPool(2, inline_below=2, chunk=7)(root, todo, trusted, max_size)
        save_frame(tmp_path, frame("ns1/f0001", n=99))  # after it was read
        return judged

    asked: list[Path] = []

    def spy(root, todo, trusted, max_size):
        asked.extend(todo)
        return judge_one_by_one(root, todo, trusted, max_size)

    cache = VerdictCache()
    cache.validate_many(tmp_path, paths, TRUSTED, MAX_SIZE, judge=changing)
    again = cache.validate_many(tmp_path, paths, TRUSTED, MAX_SIZE, judge=spy)
    assert asked == [Path("bad/missing.frame.json"), changed]
    assert again[changed] == VerdictCache().validate(tmp_path, changed, TRUSTED, MAX_SIZE)


def test_validate_many_keeps_the_cache_as_validate_does(tmp_path):
    paths = mixed_tree(tmp_path)
    asked: list[list[Path]] = []
    pool = VerifierPool(2, inline_below=2, chunk=5)

    def judge(root, todo, trusted, max_size):
        asked.append(list(todo))
        return pool(root, todo, trusted, max_size)

    by_batch, one_by_one = VerdictCache(), VerdictCache()
    first = by_batch.validate_many(tmp_path, paths, TRUSTED, MAX_SIZE, judge=judge)
    assert first == {p: one_by_one.validate(tmp_path, p, TRUSTED, MAX_SIZE) for p in paths}
    # Unchanged files come from the cache (the missing one is never cached, as in `validate`).
    again = by_batch.validate_many(tmp_path, paths, TRUSTED, MAX_SIZE, judge=judge)
    assert asked[1] == [Path("bad/missing.frame.json")]
    assert all(again[p] is first[p] for p in paths if p != Path("bad/missing.frame.json"))
    # A changed file and a change of trust are judged again.
    save_frame(tmp_path, frame("ns1/f0001", n=99))
    by_batch.validate_many(tmp_path, paths, TRUSTED, MAX_SIZE, judge=judge)
    assert asked[2] == [Path("bad/missing.frame.json"), Path("ns1/f0001.frame.json")]
    widened = {**TRUSTED, "mallory": STRANGER.public_key()}
    verdicts = by_batch.validate_many(tmp_path, paths, widened, MAX_SIZE, judge=judge)
    assert len(asked[3]) == len(paths) and verdicts[Path("bad/untrusted.frame.json")].ok


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stuck"])
def test_a_killed_or_stuck_worker_costs_time_not_verdicts(tmp_path, caplog, sig):
    paths = mixed_tree(tmp_path, good=1500)
    expected = judge_one_by_one(tmp_path, paths, TRUSTED, MAX_SIZE)
    me = psutil.Process()
    killed: list[int] = []

    def kill_a_worker() -> None:
        deadline = time.monotonic() + 30
        while not killed and time.monotonic() < deadline:
            for child in me.children():
                if child.cmdline()[:1] == me.cmdline()[:1]:  # a forked worker, not a `git`
                    os.kill(child.pid, sig)
                    killed.append(child.pid)
                    break
            time.sleep(0.001)

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    with caplog.at_level(logging.WARNING, logger="orchestrator.verifier"):
        got = VerifierPool(2, inline_below=2, chunk=10, stall_s=2)(tmp_path, paths, TRUSTED, MAX_SIZE)
    killer.join()
    assert killed and got == expected
    # a worker stopped before it took a task is found when the batch ends, not by its silence
    assert ("stopped" if sig == signal.SIGKILL else "gave no answer for 2 s") in caplog.text or (
        sig == signal.SIGSTOP and "did not stop after the batch; they were ended" in caplog.text)
    # the executor's own thread reaps it after a failure; the call did not wait for that
    wait_for(lambda: not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE,
             timeout=10, what="the stopped worker to be ended")


def test_a_worker_that_never_exits_after_the_batch_is_ended_not_waited_for(caplog):
    """A worker stopped before it took a task is never missed (the others answer for it);
    waiting for it to exit held the batch thread for ever in one CI run."""
    done = FORK.Process(target=lambda: None)
    stuck = FORK.Process(target=lambda: os.kill(os.getpid(), signal.SIGSTOP))
    for process in (done, stuck):
        process.start()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="orchestrator.verifier"):
        _end_stragglers([done, stuck])
    assert time.monotonic() - started < EXIT_S + 5
    stuck.join(10)
    done.join(10)
    assert stuck.exitcode == -signal.SIGKILL and done.exitcode == 0
    assert "1 frame verification worker(s) did not stop after the batch" in caplog.text


def test_small_batches_are_judged_here_without_a_fork(tmp_path):
    paths = mixed_tree(tmp_path, good=5)
    me = psutil.Process()
    seen: set[int] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.update(c.pid for c in me.children())
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        got = VerifierPool(2, inline_below=len(paths) + 1)(tmp_path, paths, TRUSTED, MAX_SIZE)
    finally:
        stop.set()
        watcher.join()
    assert got == judge_one_by_one(tmp_path, paths, TRUSTED, MAX_SIZE) and not seen


def test_workers_end_with_a_killed_daemon_and_free_its_locks(tmp_path):
    """A forked worker holds the daemon's `flock`s; after kill -9 a restarted daemon must get
    them, so the workers must not outlive the daemon."""
    lock = tmp_path / "frames.lock"
    script = f"""
import fcntl, sys
from pathlib import Path
from tests.unit.test_verifier import MAX_SIZE, TRUSTED, mixed_tree
from orchestrator.verifier import VerifierPool
from tests.conftest import wait_for
held = open({str(lock)!r}, "w")
fcntl.flock(held, fcntl.LOCK_EX)
paths = mixed_tree(Path({str(tmp_path)!r}), good=3000)
print("judging", flush=True)
VerifierPool(2, inline_below=2, chunk=10)(Path({str(tmp_path)!r}), paths, TRUSTED, MAX_SIZE)
"""
    daemon = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parents[2])
    workers: list[psutil.Process] = []
    try:
        assert daemon.stdout.readline().strip() == "judging"
        wait_for(lambda: workers.extend(psutil.Process(daemon.pid).children()) or workers, timeout=30,
                 what="the workers to start")
        daemon.kill()
        daemon.wait()

        def lock_free() -> bool:
            with open(lock, "w") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                return True

        wait_for(lock_free, timeout=10, what="the killed daemon's lock to be free")
        wait_for(lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers),
                 timeout=10, what="the workers to end")
    finally:
        daemon.stdout.close()
        for worker in workers:
            if worker.is_running():
                worker.kill()
