"""The app's wiring, driven by the pilot with a fake service (fast, no Syncthing): every
action asks first and calls the service it names; errors reach the user as sentences; the
command palette reaches every action; workers and timers stop when the app does."""

from __future__ import annotations

import asyncio

from textual.command import CommandPalette
from textual.widgets import ProgressBar, Static, TabbedContent

from tests.tui.fakes import FORK, REVISIONS, BrokenService, FakeService
from tests.tui.helpers import until
from tui.app import make_app
from tui.commands import TwinsyncCommands
from tui.dialogs import ConfirmScreen, HelpScreen


def _run(service, scenario, refresh_s: float = 0.1):
    async def main():
        app = make_app("/nonexistent", refresh_s=refresh_s, service=service)
        # a tab switched under a dialog finishes its underline animation only when the
        # dialog closes; the pilot would wait for it, so no animations here
        app.animation_level = "none"
        async with app.run_test(size=(120, 40)) as pilot:
            await scenario(app, pilot)
        return app

    return asyncio.run(main())


def _notes(app) -> list[tuple[str, str]]:
    return [(n.severity, n.message) for n in app._notifications]


def test_decisions_ask_first_and_cancel_does_nothing():
    service = FakeService()

    async def scenario(app, pilot):
        await pilot.press("2")
        queue = app.pane("queue")
        await until(pilot, lambda: queue.entries, "the queue")
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the dialog")
        assert app.screen.body.splitlines() == [
            "current version: by laptop, written at 2026-11-25 07:58:12 UTC",
            "set-aside version: by desktop, written at 2026-11-25 07:59:30 UTC (in Syncthing's conflict copy "
            "notes/today.frame.sync-conflict-20261125-080000-U2CYW6V.json, Syncthing named it after device "
            "U2CYW6V = laptop, the last to change the version that won)",
            "",
            "approve: the set-aside version by desktop becomes notes/today on every node; the conflict copy "
            "is removed and the version by laptop stays in Git history."]
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen), "the dialog gone")
        assert service.calls == []
        await pilot.press("r", "y")
        await until(pilot, lambda: service.calls, "the reject")
        assert service.calls == [("decide_conflict", 3, False)]
        await until(pilot, lambda: ("information", "#3 notes/today: rejected on laptop at 2026-11-25 08:10:00 UTC")
                    in _notes(app), "the result")

        await pilot.press("down")  # the invalid file: nothing to decide, it says why
        await pilot.press("a")
        await until(pilot, lambda: any("closes by itself" in m for _, m in _notes(app)), "the explanation")
        assert not isinstance(app.screen, ConfirmScreen)

        await pilot.press("down", "b", "r")  # the fork: select the other branch, reject it
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the fork dialog")
        assert "A decision step is recorded and published" in app.screen.body
        await pilot.press("y")
        await until(pilot, lambda: len(service.calls) == 2, "the fork decision")
        assert service.calls[1] == ("decide_fork", FORK.id, FORK.branches[0], "reject")

    _run(service, scenario)


def test_restore_shows_progress_and_the_result():
    service = FakeService()

    async def scenario(app, pilot):
        await pilot.press("3")
        pane = app.pane("snapshots")
        await until(pilot, lambda: pane.infos, "the snapshots")
        await pilot.press("down")  # laptop's newest: this node's own
        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the dialog")
        assert "snap-20261125T070000Z" in app.screen.title_text
        assert "kept aside" in app.screen.body and "new machine" not in app.screen.body
        service.checked.clear()
        await pilot.press("y")
        note = app.query_one("#snapshots-note", Static)
        bar = app.query_one("#restore-progress", ProgressBar)
        await until(pilot, lambda: "checking every step" in str(note.render()), "the checks after the copy")
        assert bar.display and bar.total is None and bar.progress == 10  # copied; the bar pulses
        service.checked.set()
        await until(pilot, lambda: any("Restored 42 steps" in m for _, m in _notes(app)), "the result")
        assert service.calls == [("restore", "snap-20261125T070000Z.json", False)]
        assert not bar.display

        await pilot.press("up", "R")  # desktop's: restoring it takes desktop's place, and says so
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the takeover dialog")
        assert "as a new machine" in app.screen.body
        await pilot.press("n")

    _run(service, scenario)


def test_verify_refused_is_shown_in_the_table_and_as_an_error():
    async def scenario(app, pilot):
        await pilot.press("3")
        pane = app.pane("snapshots")
        await until(pilot, lambda: pane.infos, "the snapshots")
        await pilot.press("down", "down", "down", "v")  # server's snapshot has not arrived
        await until(pilot, lambda: any(v.startswith("refused") for v in pane.verdicts.values()), "the verdict")
        assert any(s == "error" and "has not arrived yet" in m for s, m in _notes(app))

    _run(FakeService(), scenario)


def test_frame_restore_to_the_selected_revision():
    service = FakeService()

    async def scenario(app, pilot):
        await pilot.press("4")
        pane = app.pane("frames")
        await until(pilot, lambda: pane.entries, "the frames")
        await pilot.press("down")
        await until(pilot, lambda: pane.revisions, "the history of notes/today")
        await pilot.press("tab", "down", "t")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the dialog")
        assert "notes/today comes back as it was at 9c1e2a7b3f00" in app.screen.body
        assert '-  "text": "gym on Thursday"\n+  "text": "gym on Tuesday"' in app.screen.body  # the old body, as a diff
        await pilot.press("y")
        await until(pilot, lambda: service.calls, "the restore")
        assert service.calls == [("restore_frame", "notes/today", REVISIONS[1].commit)]

    _run(service, scenario)


def test_service_errors_are_notifications_not_tracebacks():
    async def scenario(app, pilot):
        await until(pilot, lambda: len(_notes(app)) >= 2, "two error notifications")
        notes = _notes(app)
        assert ("error", "Syncthing refused GET /rest/system/connections (500: boom).") in notes
        assert ("error", "Unexpected RuntimeError: an unexpected bug") in notes
        await pilot.press("5")  # the app goes on working
        await until(pilot, lambda: "3.2 ms" in str(app.query_one("#value-access_p95_ms").content), "the metrics")

    app = _run(BrokenService(), scenario, refresh_s=600)
    assert app.return_code in (0, None) and app.crash_report is None


def test_command_palette_reaches_every_action():
    service = FakeService()

    async def scenario(app, pilot):
        await until(pilot, lambda: app.pane("queue").entries, "the queue")
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), "the palette")
        await pilot.press(*"approve the selected")
        await until(pilot, lambda: "Approve the selected queue item" in str(
            app.screen.query_one("CommandList").get_option_at_index(0).prompt), "the approve command found")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the approve dialog")
        assert app.active_tab == "queue"
        await pilot.press("y")
        await until(pilot, lambda: service.calls, "the approval")
        assert service.calls == [("decide_conflict", 3, True)]

        names = [name for name, _, _ in TwinsyncCommands(app.screen)._commands()]
        for words in ("Approve", "Reject", "Verify", "Restore trace.db", "frame revision", "Refresh",
                      "Nodes tab", "Queue tab", "Snapshots tab", "Frames tab", "Metrics tab", "Help"):
            assert any(words in n for n in names), (words, names)

        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        await pilot.press("escape")

    _run(service, scenario)


def test_timer_and_workers_stop_with_the_app():
    async def scenario(app, pilot):
        await until(pilot, lambda: app.status is not None, "the first status")

    app = _run(FakeService(), scenario, refresh_s=0.05)
    assert all(w.is_finished for w in app.workers)  # threads: the autouse no_leaks fixture checks


def test_no_node_home_is_refused_before_the_app_starts(tmp_path):
    """Before `init` (or with a wrong --home) the app is never built: no screen that keeps
    loading, and the CLI exits 1 with the sentence every command gives."""
    import pytest

    from folders.layout import NoNodeError

    with pytest.raises(NoNodeError, match=r"No twinsync node at .*; run `twinsync init --name NAME` first"):
        make_app(tmp_path / "nowhere")


def test_h_shows_decided_items_with_who_decided_and_where_and_back():
    service = FakeService()

    async def scenario(app, pilot):
        await pilot.press("2")
        queue = app.pane("queue")
        await until(pilot, lambda: queue.entries, "the queue")
        assert "conflict:1" not in queue.entries
        await pilot.press("h")
        await until(pilot, lambda: list(queue.entries) == ["conflict:1"], "the decided item")
        (entry,) = queue.entries.values()
        assert entry.state == "approved on desktop at 2026-11-24 18:05:00 UTC"
        assert str(app.query_one(TabbedContent).get_tab("queue").label) == "Queue (history)"
        detail = str(app.query_one("#queue-detail").render())
        assert "decided: approved on desktop at 2026-11-24 18:05:00 UTC" in detail
        assert "approve:" not in detail  # a decided item offers no choice
        await pilot.press("a")
        await until(pilot, lambda: any("already approved on desktop" in m for _, m in _notes(app)), "the refusal")
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("h")
        await until(pilot, lambda: "conflict:3" in queue.entries and "conflict:1" not in queue.entries,
                    "the open queue again")

    _run(service, scenario)


def test_a_refresh_that_keeps_failing_says_so_once():
    async def scenario(app, pilot):
        await until(pilot, lambda: ("error", "Unexpected RuntimeError: an unexpected bug") in _notes(app),
                    "the queue's error")
        for _ in range(10):  # ten more refreshes, every one of them failing the same way
            app.tick()
            await pilot.pause(0.05)
        await pilot.pause(0.3)
        notes = _notes(app)
        assert notes.count(("error", "Unexpected RuntimeError: an unexpected bug")) == 1
        assert notes.count(("error", "Syncthing refused GET /rest/system/connections (500: boom).")) == 1

    _run(BrokenService(), scenario, refresh_s=600)
