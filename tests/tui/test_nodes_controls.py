"""The Nodes tab's controls driven by the pilot on REAL node homes and Syncthings: `p`
pauses and resumes the selected peer, `s` rescans, `g` opens Syncthing's GUI (or says its
address), `u` unpairs after asking whether to keep the peer's recovery folder."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.tui.helpers import until
from tui.app import make_app
from tui.choice import ChoiceScreen

pytestmark = pytest.mark.integration


def _messages(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


def test_nodes_tab_keys_pause_rescan_open_the_gui_and_unpair(mesh):
    a, b = mesh(2)
    b_id = json.loads(a.cli("peers", "--json").output)[0]["device_id"]
    opened: list[str] = []

    async def drive() -> None:
        app = make_app(a.home, refresh_s=0.3)
        async with app.run_test(size=(140, 40)) as pilot:
            nodes = app.pane("nodes")
            await until(pilot, lambda: "node2" in nodes.traffic and len(nodes.rows) == 2, "both nodes and traffic")
            await pilot.press("p")  # the cursor is on this node's own row
            await until(pilot, lambda: any("node1 is not a peer" in m for m in _messages(app)), "not a peer")

            await pilot.press("down", "p")
            await until(pilot, lambda: a.client().device(b_id)["paused"] is True, "node2 paused in Syncthing")
            await until(pilot, lambda: nodes.traffic["node2"].paused, "the row says paused")
            await pilot.press("p")
            await until(pilot, lambda: a.client().device(b_id)["paused"] is False, "node2 resumed")

            await pilot.press("s")
            await until(pilot, lambda: any("Syncthing is scanning twinsync-frames" in m for m in _messages(app)),
                        "rescan")

            app.open_url = lambda url: False  # no desktop browser: the address is shown
            await pilot.press("g")
            await until(pilot, lambda: any(f"Open {a.syncthing.endpoint.url}" in m for m in _messages(app)),
                        "the GUI's address")
            app.open_url = lambda url: opened.append(url) or True
            await pilot.press("g")
            await until(pilot, lambda: opened == [app.status.syncthing_url], "the browser opened")

            await pilot.press("u")
            await until(pilot, lambda: isinstance(app.screen, ChoiceScreen), "the unpair dialog")
            assert "keep it (moved to unpaired/" in app.screen.body
            await pilot.press("n")  # cancel: nothing happens
            await until(pilot, lambda: not isinstance(app.screen, ChoiceScreen), "the dialog closed")
            assert json.loads(a.cli("peers", "--json").output) != []
            await pilot.press("u")
            await until(pilot, lambda: isinstance(app.screen, ChoiceScreen), "the unpair dialog again")
            await pilot.press("k")
            await until(pilot, lambda: any("Unpaired node2" in m for m in _messages(app)), "unpaired")
            await pilot.press("q")

    asyncio.run(drive())
    assert json.loads(a.cli("peers", "--json").output) == []
    assert (a.home / "unpaired/node2").is_dir() and a.client().device(b_id) is None
