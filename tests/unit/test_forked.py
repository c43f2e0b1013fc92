"""Forked children: answers in order, arguments inherited rather than pickled, a child's error
raised here, a dead or stuck child reported as ForkedError and ended, and the reconcile
still right when its walkers fail."""

from __future__ import annotations

import os
import threading
import time

import psutil
import pytest

from orchestrator.forked import Forked, ForkedError
from orchestrator.pipeline import stale_paths


def _share(table: dict[int, str], lock: threading.Lock, k: int) -> tuple[int, str, int]:
    with lock:  # a lock cannot be pickled: only an inherited argument gets here
        return k, table[k], os.getpid()


def test_answers_come_in_order_from_children_that_inherited_their_arguments():
    table = {k: str(k) * 3 for k in range(50_000)}
    lock = threading.Lock()
    with Forked(_share, [(table, lock, k) for k in (7, 3, 49_999)]) as run:
        answers = run.results(30)
    assert [(k, text) for k, text, _ in answers] == [(7, "777"), (3, "333"), (49_999, "49999" * 3)]
    pids = {pid for _, _, pid in answers}
    assert len(pids) == 3 and os.getpid() not in pids


def _fail(how: str) -> None:
    if how == "raise":
        raise ValueError("bad share")
    if how == "exit":
        os._exit(3)
    time.sleep(600)


def test_an_error_a_child_raised_is_raised_here():
    with Forked(_fail, [("raise",)]) as run, pytest.raises(ValueError, match="bad share"):
        run.results(30)


def test_a_child_that_died_is_reported():
    with Forked(_fail, [("exit",)]) as run, pytest.raises(ForkedError, match="stopped"):
        run.results(30)


def test_a_stuck_child_is_reported_and_ended():
    with Forked(_fail, [("sleep",), ("sleep",)]) as run:
        children = psutil.Process().children()
        with pytest.raises(ForkedError, match="no answer for 0.5 s"):
            run.results(0.5)
    assert children and not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


def test_the_reconcile_walks_here_when_its_walkers_are_killed(tmp_path, caplog):
    root = tmp_path / "frames.shared"
    (root / "ns").mkdir(parents=True)
    names = [f"ns/{k}.frame.json" for k in range(20_000)]  # so a walker lives long enough to be killed
    for name in names:
        (root / name).write_text("x")
    indexed = {name: (1, os.lstat(root / name).st_mtime_ns) for name in names[1:]}
    indexed["ns/gone.frame.json"] = (1, 1)
    expected = {names[0], "ns/gone.frame.json", "ns/git-only.frame.json"}

    def tracked() -> list[str]:
        deadline = time.monotonic() + 10
        while not (children := psutil.Process().children()) and time.monotonic() < deadline:
            time.sleep(0.001)
        for child in children:
            child.kill()
        return ["ns/git-only.frame.json"]

    assert stale_paths(root, indexed, tracked, workers=2, fork_above=0) == expected
    assert "The reconcile's walkers stopped; walking frames.shared/ in the daemon instead." in caplog.text
