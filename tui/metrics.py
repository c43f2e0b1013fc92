"""The Metrics tab: the four seed metrics of this node against their thresholds, with a
sparkline of each one's history (one value per fingerprint refresh). A metric with too few
samples to judge (folders.metrics.MIN_SAMPLES) says "not enough data yet" and how many it
has, in grey, instead of a red failure."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, Sparkline, Static

from folders.metrics import METRIC_NAMES, NOT_ENOUGH_DATA, Metrics, threshold_text
from tui.pane import Pane
from tui.rows import METRIC_LABELS, judged_cell, sparkline_values
from tui.service import MetricsData


class MetricsPane(Pane):
    def compose(self) -> ComposeResult:
        with Horizontal(classes="metric metric-head"):
            yield Label("seed metric", classes="metric-name")
            yield Label("now", classes="metric-value")
            yield Label("target", classes="metric-threshold")
            yield Label("history", classes="metric-history")
        for name in METRIC_NAMES:
            with Horizontal(classes="metric"):
                yield Label(METRIC_LABELS[name], classes="metric-name")
                yield Static("…", id=f"value-{name}", classes="metric-value")
                yield Static(threshold_text(name), classes="metric-threshold")
                yield Sparkline([], id=f"spark-{name}", classes="metric-history")
        yield Static("", id="metrics-note", classes="note")

    def load(self) -> None:
        if not self.busy("metrics"):
            self.call_service(self.service.metrics, then=self.show_metrics, group="metrics", title="Metrics")

    def show_metrics(self, data: MetricsData) -> None:
        m = data.current
        for name in METRIC_NAMES:
            self.query_one(f"#value-{name}", Static).update(value_cell(m, name))
            self.query_one(f"#spark-{name}", Sparkline).data = sparkline_values(data.history, name)
        note = Text()
        note.append(f"{m.converged} of {m.concluded} published sessions agree with their goal's consensus · "
                    f"{m.frames_in_conflict} in conflict, {m.frames_invalid} invalid, "
                    f"{m.frames_disagreeing} differing of {m.frames_total} frames · "
                    f"{m.access_samples} goals timed · {m.routes} routes over {m.goals} goals")
        note.append(f"\nGreen meets the seed threshold, red does not, grey: {NOT_ENOUGH_DATA} to judge. "
                    "History grows by one point each time this node refreshes its fingerprint. "
                    "Press ? for what each metric means.", style="dim")
        self.query_one("#metrics-note", Static).update(note)


def value_cell(metrics: Metrics, name: str) -> Text:
    """The value judged against its threshold; with too few samples, "not enough data yet"
    and how many there are of how many needed."""
    have, needed, noun = metrics.samples(name)
    return judged_cell(name, getattr(metrics, name), metrics.verdict(name),
                       f"{NOT_ENOUGH_DATA}\n{have} of {needed} {noun}")
