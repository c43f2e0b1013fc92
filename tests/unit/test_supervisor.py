"""The supervisor: a piece that raises is logged with its cause, restarted with a backoff
and reported; a failing job backs off; real watchdog observers that die (their folder
deleted, a callback raising) are noticed and started again."""

from __future__ import annotations

import logging
import shutil
import threading

from orchestrator.supervisor import FAILED, OK, Supervisor, backoff_s
from orchestrator.watcher import FrameWatcher
from tests.conftest import wait_for


def test_backoff_doubles_up_to_a_minute():
    assert [backoff_s(n) for n in (1, 2, 3, 4, 7, 8, 50)] == [1, 2, 4, 8, 60, 60, 60]


def test_a_piece_that_raises_is_logged_with_its_cause_restarted_and_reported(caplog):
    runs: list[int] = []
    states: list[str] = []

    def piece(stop: threading.Event) -> None:
        runs.append(1)
        if len(runs) <= 2:
            raise ValueError(f"boom {len(runs)}")
        stop.wait()

    sup = Supervisor(first_s=0.05, most_s=0.2)
    sup._on_change = lambda: states.append(sup.health()[0].state)  # what a heartbeat would see
    with caplog.at_level(logging.ERROR, logger="orchestrator.supervisor"):
        sup.spawn("piece", piece)
        try:
            wait_for(lambda: len(runs) == 3 and sup.health()[0].state == OK, timeout=10, what="third run")
        finally:
            sup.stop()
    health = sup.health()[0]
    assert (health.name, health.state, health.problem, health.restarts) == ("piece", OK, None, 2)
    assert states.count(FAILED) == 2 and states[-1] == OK
    failures = [r for r in caplog.records if "piece failed" in r.getMessage()]
    assert [r.getMessage() for r in failures] == ["piece failed (ValueError: boom 1); restarting in 0 s",
                                                  "piece failed (ValueError: boom 2); restarting in 0 s"]
    assert all(r.exc_info for r in failures), "an unexpected error is logged with its traceback"


def test_a_failing_job_backs_off_then_runs_again_and_is_ok():
    now = [100.0]
    calls: list[int] = []

    def job(fail: bool) -> None:
        calls.append(1)
        if fail:
            raise OSError("disk full")

    sup = Supervisor(expected=(OSError,), first_s=1.0, most_s=8.0, clock=lambda: now[0])
    assert sup.call("merge", job, True) is False
    assert sup.health()[0].state == FAILED and "disk full (retrying in 1 s)" == sup.health()[0].problem
    assert sup.call("merge", job, False) is False and len(calls) == 1, "skipped within its backoff"
    now[0] += 1.0
    assert sup.call("merge", job, True) is False and len(calls) == 2
    now[0] += 1.0
    assert sup.call("merge", job, False) is False and len(calls) == 2, "the second failure waits 2 s"
    now[0] += 1.0
    assert sup.call("merge", job, False) is True
    assert (sup.health()[0].state, sup.health()[0].problem) == (OK, None)


def test_a_watcher_whose_folder_is_deleted_restarts_once_it_is_back(tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    seen: set[str] = set()
    rescans: list[int] = []
    sup = Supervisor(expected=(OSError,), first_s=0.1, most_s=0.2)
    sup.spawn("watcher", FrameWatcher(root, seen.update, lambda: rescans.append(1)).run)
    try:
        wait_for(lambda: rescans, timeout=10, what="the first rescan")
        (root / "a.txt").write_text("a")
        wait_for(lambda: "a.txt" in seen, timeout=10, what="a.txt seen")
        shutil.rmtree(root)  # inotify's emitter ends here: without supervision nothing is seen again
        wait_for(lambda: sup.health()[0].state == FAILED, timeout=10, what="the watcher reported failed")
        assert str(root) in sup.health()[0].problem
        before = len(rescans)
        root.mkdir()
        wait_for(lambda: len(rescans) > before, timeout=10, what="the watcher restarted, with a rescan")
        assert sup.health()[0].restarts >= 1
        (root / "b.txt").write_text("b")
        wait_for(lambda: "b.txt" in seen, timeout=10, what="b.txt seen after the restart")
    finally:
        sup.stop()


def test_a_callback_that_raises_does_not_end_the_watcher(tmp_path, caplog):
    seen: set[str] = set()

    def on_change(paths: set[str]) -> None:
        if "bad.txt" in paths:
            raise RuntimeError("a bug in the callback")
        seen.update(paths)

    rescans: list[int] = []
    sup = Supervisor(first_s=0.1, most_s=0.2)
    sup.spawn("watcher", FrameWatcher(tmp_path, on_change, lambda: rescans.append(1)).run)
    try:
        wait_for(lambda: rescans, timeout=10, what="the watcher started")
        with caplog.at_level(logging.ERROR, logger="orchestrator.supervisor"):
            (tmp_path / "bad.txt").write_text("x")
            wait_for(lambda: sup.health()[0].restarts >= 1, timeout=10, what="a restart")
        assert any("RuntimeError: a bug in the callback" in r.getMessage() for r in caplog.records)
        wait_for(lambda: len(rescans) >= 2, timeout=10, what="the watcher started again")
        (tmp_path / "good.txt").write_text("y")
        wait_for(lambda: "good.txt" in seen, timeout=10, what="good.txt seen after the restart")
    finally:
        sup.stop()
