"""Children forked from the daemon for work that holds the GIL: frame verification and the
reconcile's walk. Threads barely overlap there (a signature check holds the GIL for most of
its ~0.2 ms; a walk's stat calls drop and retake it 100k times, and a second busy thread
makes each retake wait), while a forked child starts in milliseconds with every module
imported and reads the parent's data without it being copied through a pipe.

A forked child inherits the daemon's open files and its `flock`s, and it may inherit a lock
another thread held at the fork, so children here do plain computing and file reads, never
logging or SQLite, and end with the daemon.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from typing import Any, Generic, TypeVar

R = TypeVar("R")

_PR_SET_PDEATHSIG = 1  # linux/prctl.h

#: fork: a child starts with every module imported and the parent's data in place.
FORK = multiprocessing.get_context("fork")


class ForkedError(Exception):
    """The children stopped (one was killed) or gave no answer in time; the caller does the
    work itself, so nothing is lost, only slower."""


def cores() -> int:
    """The cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def die_with(parent: int) -> None:
    """In a child: end when the daemon ends. A forked child holds the daemon's open files,
    its `flock`s on daemon.lock and frames.lock among them, and would otherwise live on
    after a kill -9, so a restarted daemon could not take its locks."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)


class Forked(Generic[R]):
    """`fn(*args)` for each of `calls`, each in its own forked child, started at once; the
    arguments are inherited, not pickled, so a child may be given a 100k-entry dict for
    free. Use as a context manager: leaving it ends every child."""

    def __init__(self, fn: Callable[..., R], calls: Iterable[tuple[Any, ...]]) -> None:
        self._children: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        try:
            for args in calls:
                receive, send = FORK.Pipe(duplex=False)
                child = FORK.Process(target=_run, args=(os.getpid(), send, fn, args), daemon=True)
                self._children.append((child, receive))
                child.start()
                send.close()
        except OSError as exc:  # no memory or processes left to fork
            self.close()
            raise ForkedError(f"could not start ({exc.strerror or exc})") from None

    def results(self, stall_s: float) -> list[R]:
        """Every child's answer, in the order of `calls`; an exception a child raised is
        raised here. ForkedError when a child died or all took longer than `stall_s`."""
        deadline = time.monotonic() + stall_s
        answers = []
        for _, receive in self._children:
            if not receive.poll(max(0.0, deadline - time.monotonic())):
                raise ForkedError(f"gave no answer for {stall_s:g} s")
            try:
                ok, value = receive.recv()
            except (EOFError, OSError):
                raise ForkedError("stopped") from None
            if not ok:
                raise value
            answers.append(value)
        return answers

    def close(self) -> None:
        for child, receive in self._children:
            receive.close()
            if child.pid is not None:
                child.kill()  # done already, or stuck: either way nothing more is wanted from it
                child.join()
        self._children.clear()

    def __enter__(self) -> Forked[R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _run(parent: int, send: Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    die_with(parent)
    try:
        answer = (True, fn(*args))
    except Exception as exc:  # raised in the parent, as if the work had been done there
        answer = (False, exc)
    send.send(answer)
    send.close()
