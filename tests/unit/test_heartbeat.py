"""`read_health` from a real lock and a real heartbeat file: each state and its sentence,
and an unreadable heartbeat is a state, never an exception."""

from __future__ import annotations

import os
from datetime import timedelta

from folders.trace import format_ts, parse_ts, utc_now
from orchestrator.heartbeat import (DEGRADED, HEARTBEAT_NAME, NOT_RUNNING, RUNNING, STALE_AFTER_S, STALLED,
                                    Heartbeat, read_health, write_heartbeat)
from orchestrator.lock import daemon_lock
from orchestrator.supervisor import DEGRADED as PIECE_DEGRADED
from orchestrator.supervisor import PieceHealth


def _beat(**changes) -> Heartbeat:
    now = format_ts(utc_now())
    return Heartbeat(**{"pid": os.getpid(), "started": now, "written": now, **changes})


def test_each_state_with_its_sentence(tmp_path):
    assert read_health(tmp_path).state == NOT_RUNNING
    with daemon_lock(tmp_path):
        assert read_health(tmp_path).message == f"The daemon (pid {os.getpid()}) is starting."
        beat = _beat(pieces=[PieceHealth("batches"), PieceHealth("syncthing-events", PIECE_DEGRADED, "x" * 300)])
        write_heartbeat(tmp_path, beat)
        degraded = read_health(tmp_path)
        assert degraded.state == DEGRADED and degraded.message == (
            f"The daemon (pid {os.getpid()}) runs, but syncthing-events is degraded: {'x' * 100}… (300 characters).")
        write_heartbeat(tmp_path, _beat())
        assert read_health(tmp_path).state == RUNNING
        later = parse_ts(beat.written) + timedelta(seconds=STALE_AFTER_S + 1)
        assert read_health(tmp_path, now=later).state == STALLED
    gone = read_health(tmp_path)
    assert gone.state == NOT_RUNNING and "its last heartbeat was at" in gone.message


def test_a_daemon_that_never_writes_its_heartbeat_is_stalled_and_garbage_is_no_heartbeat(tmp_path):
    (tmp_path / HEARTBEAT_NAME).write_text('{"pid": "not a number", "pieces": [{"bad": 1}]}')
    with daemon_lock(tmp_path):
        assert read_health(tmp_path).state == RUNNING  # it took the lock a moment ago: starting
        later = utc_now() + timedelta(seconds=STALE_AFTER_S + 5)
        stalled = read_health(tmp_path, now=later)
        assert stalled.state == STALLED and "has written no heartbeat since it started" in stalled.message
    (tmp_path / HEARTBEAT_NAME).write_bytes(b"\xff\x00")
    assert read_health(tmp_path).state == NOT_RUNNING
