"""An idle node leaves its fingerprint alone: it is re-signed and rewritten only when a value
in it changed or when it is half-way to stale, so idle nodes give Syncthing nothing to send."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from folders.fingerprint import FINGERPRINT_NAME
from orchestrator.node import Node
from orchestrator.recovery import publish_now
from tests.conftest import wait_for
from tests.unit.tracekit import START

pytestmark = pytest.mark.integration


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
