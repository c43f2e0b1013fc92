"""Frame verification on every core: a large batch's files are judged by worker processes
(forked for the batch and gone after it), because a signature check holds the GIL for most
of its ~0.2 ms and threads barely overlap. `folders.validator` stays pure; this module is
only the fan-out, and a verdict is the one `validate_frame_file` gives, wherever it ran.

Small batches are judged here, in the daemon: forking costs more than it saves below
`INLINE_BELOW` files, and one frame put must not wait for a fork. If the workers stop
answering (one was killed, or a fork inherited a lock another thread held), they are ended
and the files not yet judged are judged here, so a batch is never lost, only slower; a
worker still there `EXIT_S` after the batch is ended too, never waited for.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import wait as wait_for_exits
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from folders.frame import Frame
from folders.keys import parse_public_key, public_key_text
from folders.validator import Judged, Verdict, VerdictCode, judge_one, judge_one_by_one
from orchestrator.forked import FORK, cores, die_with

logger = logging.getLogger(__name__)

#: Below this many files a batch is judged in the daemon: measured on 2 cores, starting the
#: workers costs about what judging 100–200 frames does.
INLINE_BELOW = 500
#: Files per task: large enough that a task's pickling is small beside its checks, small
#: enough that both workers stay busy to the end of a batch.
CHUNK = 200
#: A task whose answer takes longer than this means a stuck or dead worker: a chunk of
#: ordinary frames takes milliseconds, and judging here is always correct, only slower.
STALL_S = 60.0
#: A worker exits within milliseconds of the batch's end; one still there after this is stuck.
EXIT_S = 5.0

#: (stamp, ok, code, message, frame, blob) of a judged file, its path left out (the daemon knows it).
_Compact = tuple[tuple[Any, ...] | None, bool, VerdictCode, str, Frame | None, str | None]


class VerifierPool:
    """Judges a batch's files on `workers` processes (default: the cores this process may
    use); pass it as the `judge` of `VerdictCache.validate_many`."""

    def __init__(self, workers: int | None = None, *, inline_below: int = INLINE_BELOW,
                 chunk: int = CHUNK, stall_s: float = STALL_S) -> None:
        self.workers = workers or cores()
        self.inline_below = inline_below
        self.chunk = chunk
        self.stall_s = stall_s

    def __call__(self, root: Path, paths: list[Path], trusted: Mapping[str, Ed25519PublicKey],
                 max_size: int) -> list[Judged]:
        if self.workers < 2 or len(paths) < self.inline_below:
            return judge_one_by_one(root, paths, trusted, max_size)
        keys = {name: public_key_text(key) for name, key in trusted.items()}
        tasks = [(str(root), [str(p) for p in paths[i:i + self.chunk]], keys, max_size)
                 for i in range(0, len(paths), self.chunk)]
        judged: list[_Compact] = []
        # fork: the workers start in milliseconds with every module already imported.
        pool = ProcessPoolExecutor(min(self.workers, len(tasks)), mp_context=FORK,
                                   initializer=die_with, initargs=(os.getpid(),))
        workers: list[Any] = []
        try:
            answers = [pool.submit(_judge_chunk, task) for task in tasks]
            workers = list((getattr(pool, "_processes", None) or {}).values())  # fork: all start at the first submit
            for answer in answers:
                judged.extend(answer.result(timeout=self.stall_s))
        except (BrokenProcessPool, TimeoutError) as exc:
            logger.warning("Frame verification workers %s; judging the remaining %d files here instead.",
                           "stopped" if isinstance(exc, BrokenProcessPool) else
                           f"gave no answer for {self.stall_s:.0f} s", len(paths) - len(judged))
            for process in workers:
                process.kill()  # a stuck worker would hold up shutdown; the executor has no public kill
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            _end_stragglers(workers)
        return ([(stamp, Verdict(ok, code, message, frame, path, blob))
                 for path, (stamp, ok, code, message, frame, blob) in zip(paths, judged)]
                + judge_one_by_one(root, paths[len(judged):], trusted, max_size))


def _end_stragglers(workers: list[Any]) -> None:
    """Workers that have not exited `EXIT_S` after the batch are ended; the executor's own
    thread reaps them. A worker stuck before it took any task (a fork that inherited a held
    lock) is never missed while the others answer for it, and waiting for its exit, as
    `shutdown(wait=True)` does, would hold the batch thread for ever: a CI run saw exactly that."""
    deadline = time.monotonic() + EXIT_S
    left = {process.sentinel: process for process in workers}
    while left and (remaining := deadline - time.monotonic()) > 0:
        for ended in wait_for_exits(list(left), remaining):
            left.pop(ended)
    for process in left.values():
        process.kill()
    if left:
        logger.warning("%d frame verification worker(s) did not stop after the batch; they were ended.",
                       len(left))


def _judge_chunk(task: tuple[str, list[str], dict[str, str], int]) -> list[_Compact]:
    """In a worker: the verdicts of one chunk, compact (a Path pickles slowly). Judging
    never raises for a bad file; anything else it raises is raised in the daemon, as it
    would be judging there."""
    root, paths, keys, max_size = task
    trusted = {name: parse_public_key(text) for name, text in keys.items()}
    return [(stamp, v.ok, v.code, v.message, v.frame, v.blob)
            for stamp, v in (judge_one(Path(root), Path(path), trusted, max_size) for path in paths)]
