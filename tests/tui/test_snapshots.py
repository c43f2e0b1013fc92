"""SVG snapshots of every tab and dialog, with a fake service holding fixed values.

Update the baselines after a deliberate change with
`.venv/bin/pytest tests/tui/test_snapshots.py --snapshot-update`, and look at them first.
"""

from __future__ import annotations

import pytest

from tests.tui.fakes import FakeService
from tui.app import make_app

SIZE = (120, 40)


def _app(**fake):
    # a refresh period longer than the test: what is on screen is the first load only
    return make_app("/nonexistent", refresh_s=600, service=FakeService(**fake))


async def _settled(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def _on(tab: str, *keys: str):
    async def run_before(pilot) -> None:
        await _settled(pilot)
        await pilot.press(tab, *keys)
        await _settled(pilot)

    return run_before


@pytest.mark.parametrize("tab, keys", [
    pytest.param("1", ("down", "down"), id="nodes"),
    pytest.param("2", (), id="queue-conflict"),
    pytest.param("2", ("down", "down"), id="queue-fork"),
    pytest.param("3", ("v",), id="snapshots-verified"),
    pytest.param("4", ("down",), id="frames"),
    pytest.param("5", (), id="metrics"),
])
def test_tab(snap_compare, tab, keys):
    assert snap_compare(_app(), run_before=_on(tab, *keys), terminal_size=SIZE)


def test_syncthing_down_banner(snap_compare):
    assert snap_compare(_app(syncthing_ok=False), run_before=_on("1"), terminal_size=SIZE)


def test_confirm_dialog_says_what_happens_on_every_node(snap_compare):
    assert snap_compare(_app(), run_before=_on("2", "a"), terminal_size=SIZE)


def test_help_screen(snap_compare):
    assert snap_compare(_app(), run_before=_on("1", "question_mark"), terminal_size=SIZE)


ASK = ("k", *"plan", "space", *"the", "space", *"week", "enter")


def test_ask_dialog_shows_the_answer_who_gave_it_and_every_peer_tried(snap_compare):
    assert snap_compare(_app(), run_before=_on("1", *ASK), terminal_size=SIZE)
