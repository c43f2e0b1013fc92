"""An idle node leaves its fingerprint alone: it is re-signed and rewritten only when a value
in it changed or when it is half-way to stale, so idle nodes give Syncthing nothing to send."""

from __future__ import annotations

import os
import shutil
import threading
import time
from contextlib import closing
from datetime import timedelta

import pytest

from folders.fingerprint import FINGERPRINT_NAME
from folders.trace import STEP_COLUMNS, connect, step_hash
from orchestrator.fingerprint_inputs import FULL_CHECK_S, FingerprintInputs
from orchestrator.node import Node
from orchestrator.recovery import announce_fingerprint, publish_now, refresh_fingerprint
from orchestrator.state import read_state
from orchestrator.topology import TOPOLOGY_FILE
from orchestrator.traces import ForkWatch
from tests.conftest import wait_for
from tests.unit.tracekit import START

pytestmark = pytest.mark.integration

INSERT = f"INSERT INTO steps ({', '.join(STEP_COLUMNS)}) VALUES ({', '.join('?' * len(STEP_COLUMNS))})"


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self):
        return self.now


def test_the_fingerprint_is_rewritten_only_when_it_changed_or_ages(node_factory):
    node = node_factory("solo")
    clock = Clock()
    fingerprint = node.home / "trace" / "recovery" / "solo" / FINGERPRINT_NAME
    with Node.open(node.home) as opened:
        stale_s = opened.config.traces.fingerprint_stale_s
        _record(node, "rest on sunday")
        publish_now(opened, clock=clock)
        first = fingerprint.read_bytes()
        assert b'"trace_sessions": 1' in first and b'"access_p95_ms": null' not in first

        clock.now += timedelta(seconds=stale_s / 2 - 60)  # many publish ticks, nothing new
        publish_now(opened, clock=clock)  # (the access time measured again differs: no matter)
        assert fingerprint.read_bytes() == first

        _record(node, "walk on saturday")
        publish_now(opened, clock=clock)  # a new published session: new counts, signed now
        second = fingerprint.read_bytes()
        assert b'"trace_sessions": 2' in second

        clock.now += timedelta(seconds=stale_s / 2 + 1)  # unchanged, but half-way to stale
        publish_now(opened, clock=clock)
        assert fingerprint.read_bytes() != second

        fingerprint.write_text("{ not json")  # a damaged file is replaced, whatever its age
        publish_now(opened, clock=clock)
        assert fingerprint.read_bytes().startswith(b"{\n")


def _record(node, conclusion: str) -> None:
    session = node.cli("trace", "start", "plan the week").output.strip()
    node.cli("trace", "finish", session, conclusion)


def test_the_daemon_refreshes_the_fingerprint_soon_after_a_publish_not_at_the_next_interval(
        node_factory, daemon_factory):
    # The daemon's publish and merge jobs leave the fingerprint to one coalesced refresh
    # (FINGERPRINT_COALESCE_S after the first change): a session finished here must reach
    # the fingerprint well before the next publish interval would have refreshed it.
    node = node_factory("solo")
    fingerprint = node.home / "trace" / "recovery" / "solo" / FINGERPRINT_NAME
    with Node.open(node.home) as opened:
        interval = opened.config.traces.publish_interval_s
    daemon_factory(node)
    wait_for(fingerprint.exists, timeout=30, what="the daemon's first fingerprint")
    _record(node, "rest on sunday")
    finished = time.monotonic()
    wait_for(lambda: b'"trace_sessions": 1' in fingerprint.read_bytes(), timeout=interval,
             what="the fingerprint to count the session")
    assert time.monotonic() - finished < interval / 2
    _record(node, "walk on saturday")  # a second burst gets its own refresh too
    wait_for(lambda: b'"trace_sessions": 2' in fingerprint.read_bytes(), timeout=interval / 2,
             what="the fingerprint to count the second session")


def test_an_idle_daemon_reads_nothing_until_an_input_of_the_fingerprint_changes(node_factory):
    """`FingerprintInputs` lets the daemon skip the full check (every frame, every step,
    every fingerprint) while nothing it reads changed; each input must wake it."""
    a = node_factory("solo")
    peer = node_factory("peer")
    with Node.open(a.home) as opened:
        clock = [0.0]
        inputs = FingerprintInputs(opened, clock=lambda: clock[0])
        try:
            def check() -> bool:
                """Whether the full check was due (and, when it was, that it ran)."""
                done = inputs.due()
                if done is not None:
                    done(False)
                return done is not None

            assert check() and not check()  # the first check, then quiet
            a.cli("frame", "put", "notes/today", "--body", '{"v": 1}')  # state.db
            assert check() and not check()
            _record(a, "rest on sunday")  # trace.db
            assert check() and not check()

            own = a.home / "trace" / "recovery" / "solo" / FINGERPRINT_NAME
            assert own.exists() or publish_now(opened) and own.exists()
            check()
            own.unlink()  # removed by hand: the check puts it back
            assert check() and not check()
            replaced = own.with_name(".syncthing.tmp")  # a same-size, same-time file by rename
            replaced.write_bytes(b"x")
            stat = os.stat(replaced)
            os.replace(replaced, own)
            assert check() and not check()
            own.write_bytes(b"y")
            os.utime(own, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            assert check() and not check()

            a.cli("pair", peer.cli("invite").output.strip())  # trusted.toml (and a new folder)
            assert check() and not check()
            theirs = a.home / "trace" / "recovery" / "peer" / FINGERPRINT_NAME
            theirs.parent.mkdir(parents=True, exist_ok=True)
            theirs.write_text("{}")  # a peer's fingerprint arrives
            assert check() and not check()
            (a.home / TOPOLOGY_FILE).write_text('{"namespaces": {}}')
            assert check() and not check()

            clock[0] += FULL_CHECK_S  # nothing changed, but the full check is due now and then
            assert check() and not check()

            done = inputs.due()  # a change while the check reads shows next time
            assert done is None
            clock[0] += FULL_CHECK_S
            done = inputs.due()
            a.cli("frame", "put", "notes/today", "--body", '{"v": 2}')
            done(False)
            assert check()
        finally:
            inputs.close()



def test_the_checks_own_writes_do_not_make_the_next_check_due(node_factory):
    """A check that rewrote the fingerprint and kept its metrics history in state.db leaves
    nothing to check (before, every change cost a second full check that found only its own
    writes); a commit by anyone else while it ran still wakes the next one."""
    a = node_factory("solo")
    with Node.open(a.home) as opened:
        inputs = FingerprintInputs(opened)
        try:
            a.cli("frame", "put", "notes/first", "--body", '{"v": 0}')  # a conflict rate to keep
            own = a.home / "trace" / "recovery" / "solo" / FINGERPRINT_NAME
            own.unlink(missing_ok=True)

            def history() -> int:
                with closing(read_state(opened.layout.state_db)) as conn:
                    return conn.execute("SELECT count(*) FROM metrics").fetchone()[0]

            kept = history()
            assert announce_fingerprint(opened, inputs=inputs)  # rewritten, its metrics kept
            assert own.exists() and history() > kept
            assert inputs.due() is None

            a.cli("frame", "put", "notes/today", "--body", '{"v": 1}')
            done = inputs.due()
            assert done is not None
            assert refresh_fingerprint(opened, through=inputs.writer())  # the new frame: rewritten
            a.cli("frame", "put", "notes/today", "--body", '{"v": 2}')  # another writer, meanwhile
            done(True)
            assert inputs.due() is not None
        finally:
            inputs.close()


def test_the_daemons_fork_watch_reads_the_trace_again_only_when_it_changed(node_factory):
    """The alert loop looks for forks every 15 s; on a 1M-step trace each look was a 2 s scan."""
    node = node_factory("solo")
    session = node.cli("trace", "start", "plan the week").output.strip()
    node.cli("trace", "add", session, "observation", "rain on monday")
    with Node.open(node.home) as opened:
        watch = ForkWatch(opened)
        try:
            first = watch()
            assert first == [] and watch() is first  # unchanged: not read again
            with closing(connect(opened.layout.trace_db)) as conn, conn:
                parent, ts = conn.execute("SELECT parent, ts FROM steps WHERE kind = 'observation'").fetchone()
                other = ("observation", "sun on monday")
                conn.execute(INSERT, (step_hash(session, "plan the week", parent, "solo", ts, *other),
                                      session, "plan the week", parent, "solo", ts, *other))
            found = watch()  # another connection committed: read again
            assert [(f.goal, len(f.branches)) for f in found] == [("plan the week", 2)] and watch() is found
            node.cli("trace", "add", session, "inference", "take an umbrella")
            assert watch() is not found

            moved = opened.layout.trace_db.with_name("trace.db.moved")  # swapped for another file
            shutil.copy(opened.layout.trace_db, moved)
            current = watch()
            os.replace(moved, opened.layout.trace_db)
            assert watch() is not current

            # Shared by the alert loop's thread and the fingerprint job's: both get the one
            # answer computed after a change, never a half-read memo.
            node.cli("trace", "add", session, "inference", "and boots")
            answers: list[list] = []
            askers = [threading.Thread(target=lambda: answers.extend(watch() for _ in range(50)))
                      for _ in range(4)]
            for asker in askers:
                asker.start()
            for asker in askers:
                asker.join(30)
            assert len(answers) == 200 and all(answer is answers[0] for answer in answers)
            assert [(f.goal, len(f.branches)) for f in answers[0]] == [("plan the week", 2)]
        finally:
            watch.close()


def test_the_frame_counts_are_recounted_only_when_state_db_or_the_topology_changed(node_factory):
    """A busy trace wakes the fingerprint check often; the frame counts (every valid frame's
    path and hash: seconds with 100k frames) come from state.db and the topology only, and
    the check's own writes to state.db do not count as a change."""
    a = node_factory("solo")
    with Node.open(a.home) as opened:
        inputs = FingerprintInputs(opened)
        counted: list[int] = []

        def count() -> int:
            counted.append(1)
            return len(counted)
        try:
            a.cli("frame", "put", "notes/first", "--body", '{"v": 0}')
            assert announce_fingerprint(opened, inputs=inputs)  # counts; keeps its metrics through writer()
            kept = inputs.frame_counts(count)
            assert not counted and kept.total == 1
            a.cli("frame", "put", "notes/second", "--body", '{"v": 1}')  # another writer
            assert inputs.frame_counts(count) == 1
            assert inputs.frame_counts(count) == 1
            (a.home / TOPOLOGY_FILE).write_text('{"namespaces": {}}')
            assert inputs.frame_counts(count) == 2
        finally:
            inputs.close()
