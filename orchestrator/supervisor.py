"""Supervised pieces of the daemon: a thread that dies takes a capability with it, silently.

Each long-running piece (a watcher, the Syncthing event stream, the MQTT client, the batch
loop) runs in a thread of the `Supervisor`: when it raises, the cause is logged and the
piece starts again after a backoff that doubles with each failure in a row (1 s, 2 s, 4 s …
up to a minute; a piece that ran a minute before failing starts over at 1 s). A scheduled
job is a piece too, run once per tick through `call`: a failure is logged and the job is
skipped until its backoff has passed. A piece that works but waits on something outside
(Syncthing is down, the broker is away) says so with `report`. `health()` is what the
heartbeat writes and `status`, `doctor` and the TUI show.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from folders.trace import format_ts, utc_now

logger = logging.getLogger(__name__)

#: A piece's states: it works; it runs but waits on something outside; it raised and
#: restarts (or, for a job, runs again) after its backoff.
OK, DEGRADED, FAILED = "ok", "degraded", "failed"

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
#: A piece that ran this long before it failed is not failing in a loop: its backoff restarts.
BACKOFF_RESET_S = 60.0
#: How long `stop` waits for a piece's thread (the batch in flight finishes first).
STOP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class PieceHealth:
    name: str
    state: str = OK
    problem: str | None = None
    restarts: int = 0
    since: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def backoff_s(failures: int, first: float = BACKOFF_FIRST_S, most: float = BACKOFF_MAX_S) -> float:
    """The wait before the next try after `failures` failures in a row."""
    return min(most, first * 2 ** max(failures - 1, 0))


@dataclass
class _Piece:
    health: PieceHealth
    failures: int = 0
    retry_at: float = 0.0
    thread: threading.Thread | None = None
    on_stop: Callable[[], None] | None = None


class Supervisor:
    """`expected` errors are logged as one line; anything else with its traceback, since it
    is a bug. `on_change` is called (from the piece's thread) whenever a piece's state changes."""

    def __init__(self, *, expected: tuple[type[BaseException], ...] = (),
                 on_change: Callable[[], None] = lambda: None,
                 first_s: float = BACKOFF_FIRST_S, most_s: float = BACKOFF_MAX_S,
                 reset_after_s: float = BACKOFF_RESET_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._expected = expected
        self._on_change = on_change
        self._first, self._most, self._reset_after = first_s, most_s, reset_after_s
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pieces: dict[str, _Piece] = {}

    # -- long-running pieces -------------------------------------------------------------

    def spawn(self, name: str, run: Callable[[threading.Event], None], *,
              on_stop: Callable[[], None] | None = None) -> None:
        """Run `run(stop)` in its own thread until `stop()`; `run` must return soon after the
        event is set. `on_stop` unblocks a piece that waits in someone else's loop."""
        piece = self._piece(name)
        piece.on_stop = on_stop
        piece.thread = threading.Thread(target=self._supervise, args=(name, run),
                                        name=f"twinsync-{name}", daemon=True)
        piece.thread.start()

    def _supervise(self, name: str, run: Callable[[threading.Event], None]) -> None:
        while not self._stop.is_set():
            started = self._clock()
            try:
                run(self._stop)
            except Exception as exc:  # noqa: BLE001 - the point: log, wait, start it again
                delay = self._failed(name, exc, self._clock() - started, "restarting")
            else:
                if self._stop.is_set():
                    return
                delay = self._failed(name, RuntimeError("it stopped by itself"),
                                     self._clock() - started, "restarting")
            if self._stop.wait(delay):
                return
            with self._lock:
                piece = self._pieces[name]
                piece.health = replace(piece.health, restarts=piece.health.restarts + 1)
            self._set(name, OK, None)

    # -- scheduled jobs ------------------------------------------------------------------

    def call(self, name: str, work: Callable[..., Any], *args: Any) -> bool:
        """One run of a scheduled job; False when it failed or was skipped in its backoff."""
        with self._lock:
            if self._clock() < self._piece_locked(name).retry_at:
                return False
        started = self._clock()
        try:
            work(*args)
        except Exception as exc:  # noqa: BLE001 - a bug in one job must not end the daemon
            self._failed(name, exc, self._clock() - started, "retrying")
            return False
        with self._lock:
            self._pieces[name].failures = 0
        self._set(name, OK, None)
        return True

    # -- state -----------------------------------------------------------------------------

    def report(self, name: str, problem: str | None) -> None:
        """A piece that runs says what it waits for (None: nothing, it works)."""
        self._set(name, OK if problem is None else DEGRADED, problem)

    def health(self) -> list[PieceHealth]:
        with self._lock:
            return [p.health for p in self._pieces.values()]

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        self._stop.set()
        with self._lock:
            pieces = list(self._pieces.items())
        for name, piece in pieces:
            if piece.on_stop is not None:
                try:
                    piece.on_stop()
                except Exception:  # noqa: BLE001 - stopping the others matters more
                    logger.exception("stopping %s failed", name)
        for name, piece in pieces:
            if piece.thread is not None:
                piece.thread.join(timeout)
                if piece.thread.is_alive():
                    logger.warning("%s did not stop within %.0f s", name, timeout)

    def _piece(self, name: str) -> _Piece:
        with self._lock:
            return self._piece_locked(name)

    def _piece_locked(self, name: str) -> _Piece:
        if name not in self._pieces:
            self._pieces[name] = _Piece(PieceHealth(name, since=format_ts(utc_now())))
        return self._pieces[name]

    def _failed(self, name: str, exc: Exception, ran_s: float, then: str) -> float:
        with self._lock:
            piece = self._piece_locked(name)
            piece.failures = 1 if ran_s >= self._reset_after else piece.failures + 1
            delay = backoff_s(piece.failures, self._first, self._most)
            piece.retry_at = self._clock() + delay
        expected = isinstance(exc, self._expected)
        cause = str(exc) if expected else f"{type(exc).__name__}: {exc}"
        logger.error("%s failed (%s); %s in %.0f s", name, cause, then, delay,
                     exc_info=None if expected else exc)
        self._set(name, FAILED, f"{cause} ({then} in {delay:.0f} s)")
        return delay

    def _set(self, name: str, state: str, problem: str | None) -> None:
        with self._lock:
            piece = self._piece_locked(name)
            if (piece.health.state, piece.health.problem) == (state, problem):
                return
            piece.health = replace(piece.health, state=state, problem=problem, since=format_ts(utc_now()))
        self._on_change()
