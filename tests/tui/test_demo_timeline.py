"""The demo's timeline in the app (tui/timeline.py), fed from another thread as the demo's
is: entries appear as they are added; at the end the app stops asking its nodes, shows
the results, and a call that fails because the nodes stop says nothing."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from orchestrator.demo import DemoEnd, Timeline
from syncthing.errors import SyncthingError
from tests.tui.fakes import FakeService
from tests.tui.helpers import until
from tui.app import make_app
from tui.dialogs import HelpScreen

RESULTS = DemoEnd(True, ((True, "node1 meets every seed threshold"), (True, "node2 meets every seed threshold")))


def _run(service, scenario, refresh_s: float = 0.1):
    async def main():
        app = make_app(Path("/nonexistent"), refresh_s=refresh_s, service=service)
        app.animation_level = "none"
        async with app.run_test(size=(120, 40)) as pilot:
            await scenario(app, pilot)
        return app

    return asyncio.run(main())


def _errors(app) -> list[str]:
    return [n.message for n in app._notifications if n.severity == "error"]


def test_no_demo_no_panel():
    async def scenario(app, pilot):
        await pilot.pause()
        assert not app.query("#timeline") and not app.ended

    _run(FakeService(), scenario)


def test_entries_from_the_demos_thread_appear_as_they_happen_and_the_end_freezes_the_app():
    timeline = Timeline(Path("/tmp/twinsync-demo-x"), duration=60)
    service = FakeService(demo=timeline)

    async def scenario(app, pilot):
        panel = app.query_one("#timeline")
        adder = threading.Thread(target=timeline.add, args=("node3 cut off from the others",),
                                 kwargs={"incident": True, "phase": "running"})
        adder.start()
        adder.join()
        await until(pilot, lambda: "node3 cut off from the others" in str(panel.render()), "the entry")
        assert "demo · running" in str(panel.border_title) and "60 s of reasoning" in str(panel.border_title)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")

        threading.Thread(target=timeline.end, args=(RESULTS,)).start()
        await until(pilot, lambda: "Press q to quit" in str(panel.render()), "the results")
        assert "node2 meets every seed threshold" in str(panel.render())
        assert "Stopping Syncthing and the daemons" in str(panel.render())
        assert not isinstance(app.screen, HelpScreen)  # a dialog would hide the results
        assert "demo ended" in str(app.query_one("#header").render())
        assert not app.check_action("ask", ()) and not app.check_action("refresh_now", ())
        assert app.check_action("quit", ())
        calls = len(service.calls)
        status_calls = service.status_calls
        await pilot.pause(0.5)  # five refresh periods: nothing is asked any more
        assert service.status_calls == status_calls and len(service.calls) == calls

        timeline.end(DemoEnd(True, RESULTS.lines, stopped=True))
        await until(pilot, lambda: "are stopped" in str(panel.render()), "the nodes stopped")
        assert "/tmp/twinsync-demo-x" in str(panel.render())

    service.status_calls = 0
    status = service.status

    def counted():
        service.status_calls += 1
        return status()

    service.status = counted
    _run(service, scenario)


def test_a_call_that_fails_because_the_demo_ended_shows_no_error():
    """The demo sets its end, then stops its Syncthings: a status call in flight then fails.
    The failure is posted before the app has seen the end; it must not become a toast."""
    timeline = Timeline(Path("/tmp/twinsync-demo-x"), duration=60)
    service = FakeService(demo=timeline)
    release = threading.Event()
    status = service.status

    def stopping():
        if release.is_set():
            timeline.end(RESULTS)  # what Demo.finish does just before close()
            raise SyncthingError("Nothing answers at http://127.0.0.1:8384; start Syncthing there.")
        return status()

    service.status = stopping

    async def scenario(app, pilot):
        await until(pilot, lambda: app.status is not None, "the first status")
        release.set()
        await until(pilot, lambda: app.ended, "the end")
        await until(pilot, lambda: "Press q to quit" in str(app.query_one("#timeline").render()), "the results")
        await pilot.pause(0.3)
        assert _errors(app) == [] and not app.query_one("#banner").display

    _run(service, scenario)


def test_a_missed_threshold_reads_as_such():
    timeline = Timeline(Path("/tmp/x"))
    timeline.end(DemoEnd(False, ((True, "node1 meets every seed threshold"),
                                 (False, "node2 misses convergence 80.0% (wants ≥ 90.0%)"))))

    async def scenario(app, pilot):
        panel = app.query_one("#timeline")
        await until(pilot, lambda: "Press q" in str(panel.render()), "the results")
        assert panel.has_class("missed") and "✗ node2 misses convergence 80.0%" in str(panel.render())

    _run(FakeService(demo=timeline), scenario)



def test_closing_while_the_demo_goes_on_is_no_second_crash():
    """The demo's thread keeps changing the timeline while the app closes on an error: a
    change that arrives as the screen goes away is dropped, not a second crash on top."""
    timeline = Timeline(Path("/tmp/x"), duration=60)
    stop = threading.Event()

    def demo_goes_on():
        n = 0
        while not stop.wait(0.001):
            n += 1
            timeline.set(progress=f"{n} frames")

    class Boom(Exception):
        pass

    async def scenario(app, pilot):
        await pilot.pause(0.2)
        raise Boom("the scenario stops here")

    feeder = threading.Thread(target=demo_goes_on)
    feeder.start()
    try:
        with pytest.raises(Boom) as raised:
            _run(FakeService(demo=timeline), scenario)
    finally:
        stop.set()
        feeder.join()
    assert raised.value.__context__ is None, raised.value.__context__
