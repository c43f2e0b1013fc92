"""The Metrics tab, driven by the pilot: a fresh network's few samples read "not enough data
yet" in grey with how many there are, not a red failure; with enough samples each metric is
judged in its one unit; the help explains every metric in one line."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from tests.tui.fakes import HISTORY, METRICS, FakeService
from tests.tui.helpers import until
from tui.app import make_app
from tui.dialogs import METRIC_HELP
from tui.service import MetricsData

#: A fresh two-node setup: two goals, each reasoned once per node; three frames, two still
#: differing while Syncthing copies them (the "confl. 75%" a new user saw flash by).
FRESH = replace(METRICS, convergence=1.0, converged=2, concluded=2, conflict_rate=0.6667, frames_total=3,
                frames_in_conflict=0, frames_disagreeing=2, routes_per_goal=1.0, goals=2, routes=2)
#: The same network a week later: enough of everything to judge.
SETTLED = replace(METRICS, convergence=0.942, converged=49, concluded=52, conflict_rate=0.08, frames_total=50,
                  frames_in_conflict=4, frames_disagreeing=0, routes_per_goal=3.4, goals=20, routes=68)


class _Service(FakeService):
    def __init__(self, metrics):
        super().__init__()
        self._metrics = metrics

    def metrics(self) -> MetricsData:
        return MetricsData(self._metrics, HISTORY)


def _cells(metrics) -> dict[str, tuple[str, str]]:
    async def main():
        app = make_app("/nonexistent", refresh_s=600, service=_Service(metrics))
        app.animation_level = "none"
        async with app.run_test(size=(140, 40)) as pilot:
            await pilot.press("5")
            await until(pilot, lambda: "ms" in str(app.query_one("#value-access_p95_ms").content), "the metrics")
            out = {}
            for name in ("convergence", "conflict_rate", "access_p95_ms", "routes_per_goal"):
                text = app.query_one(f"#value-{name}").content
                out[name] = (text.plain, str(text.style))
            return out

    return asyncio.run(main())


def test_a_fresh_network_reads_not_enough_data_yet_not_a_red_failure():
    cells = _cells(FRESH)
    assert cells["conflict_rate"] == ("not enough data yet\n3 of 20 frames", "bright_black")
    assert cells["routes_per_goal"] == ("not enough data yet\n2 of 10 published sessions", "bright_black")
    assert cells["convergence"] == ("not enough data yet\n2 of 10 concluded sessions", "bright_black")
    assert cells["access_p95_ms"] == ("3.2 ms", "green")
    assert not any(style == "red" for _, style in cells.values())


def test_with_enough_samples_each_metric_is_judged_in_its_unit():
    cells = _cells(SETTLED)
    assert cells == {"convergence": ("94.2%", "green"), "conflict_rate": ("8.0%", "red"),
                     "access_p95_ms": ("3.2 ms", "green"), "routes_per_goal": ("3.4", "green")}


def test_help_explains_every_metric_in_one_line_with_its_unit():
    """The help screen shows these lines (its snapshot, test_help_screen, holds the layout)."""
    help_lines = dict(METRIC_HELP)
    assert list(help_lines) == ["convergence", "conflict rate", "access time", "routes per goal",
                                "not enough data yet"]
    assert "in %" in help_lines["convergence"] and "in %" in help_lines["conflict rate"]
    assert "in ms" in help_lines["access time"]
    assert all("\n" not in line for line in help_lines.values())
