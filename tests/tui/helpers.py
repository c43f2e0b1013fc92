"""Polling the running app with a deadline, as tests/conftest.py's `wait_for` does for
processes: the pilot's pause lets workers, timers and messages run meanwhile."""

from __future__ import annotations

import time
from collections.abc import Callable

from tui.dialogs import ConfirmScreen


async def until(pilot, predicate: Callable[[], object], what: str, timeout: float = 20.0):
    """Poll the running app with a deadline; the pilot pause lets workers and timers run."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.05)


async def confirm(pilot, *expected: str) -> str:
    """The confirm dialog is up and says what will happen; answer yes. Returns its text."""
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirm dialog")
    text = f"{app.screen.title_text}\n{app.screen.body}"
    for words in expected:
        assert words in text, text
    await pilot.press("y")
    return text
