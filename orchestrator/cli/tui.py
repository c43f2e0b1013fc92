"""`twinsync tui`: imports Textual only when run, so every other command stays light."""

from __future__ import annotations

from orchestrator.cli.common import HomeOption, open_node


def tui(home: HomeOption) -> None:
    """Open the terminal UI: nodes, the conflict queue, forks, snapshots and metrics.

    Exits 1 with the same sentence as every other command when there is no node at the home
    (or its config is broken), before the app takes the screen.

    Example: twinsync tui
    """
    open_node(home).close()  # a missing or broken home: one sentence, not a screen that never loads
    from tui.app import run_app

    run_app(home)
