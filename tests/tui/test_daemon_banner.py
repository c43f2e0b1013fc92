"""The TUI shows the daemon's health from its real lock and heartbeat: ✓ in the header while
a real `twinsync run` works, a banner while it is degraded (its Syncthing is down) or
stalled, and "not running" in the header once it is stopped."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from datetime import timedelta

import pytest

from folders.trace import format_ts, utc_now
from orchestrator.heartbeat import STALE_AFTER_S, load_heartbeat, write_heartbeat
from orchestrator.lock import daemon_lock
from tests.tui.helpers import until
from tui.app import make_app

pytestmark = pytest.mark.integration


def test_header_and_banner_follow_the_daemon(node_factory, daemon_factory):
    node = node_factory("n1")
    daemon = daemon_factory(node)

    async def drive() -> None:
        app = make_app(node.home, refresh_s=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            banner = app.query_one("#banner")
            header = app.query_one("#header")

            def state() -> str | None:
                return app.status.daemon.state if app.status and app.status.daemon else None

            await until(pilot, lambda: state() == "running", "the daemon running")
            assert "daemon ✓" in str(header.content) and not banner.display

            node.syncthing.stop()
            await until(pilot, lambda: state() == "degraded", "the daemon degraded", timeout=30)
            await until(pilot, lambda: "Daemon degraded — The daemon" in str(banner.content), "the daemon banner")
            assert "syncthing-events is degraded" in str(banner.content)
            node.syncthing.start()
            await until(pilot, lambda: state() == "running" and not banner.display, "the banner gone", timeout=60)

            assert daemon.stop() == 0
            await until(pilot, lambda: state() == "not running", "the daemon not running")
            assert "daemon not running" in str(header.content) and not banner.display

            # A daemon that holds the lock but stopped refreshing its heartbeat: stalled.
            last = load_heartbeat(node.home)
            old = format_ts(utc_now() - timedelta(seconds=STALE_AFTER_S + 5))
            with daemon_lock(node.home):
                write_heartbeat(node.home, replace(last, pid=os.getpid(), written=old))
                await until(pilot, lambda: state() == "stalled" and banner.display, "the stalled banner")
                assert "Daemon stalled — The daemon (pid" in str(banner.content)
                assert "has not refreshed its heartbeat" in str(banner.content)

    asyncio.run(drive())
