"""`twinsync tui`: imports Textual only when run, so every other command stays light."""

from __future__ import annotations

from folders.layout import NodeLayout
from orchestrator.cli.common import HomeOption


def tui(home: HomeOption) -> None:
    """Open the terminal UI: nodes, the conflict queue, forks, snapshots and metrics.

    Example: twinsync tui
    """
    NodeLayout(home).require()  # before the app owns the screen: exit 1 with the one sentence
    from tui.app import run_app

    run_app(home)
