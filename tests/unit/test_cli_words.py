"""Words and numbers the CLI prints: one unit per metric (as the TUI), sizes as the TUI, and a
daemon log line that reads as a sentence."""

from __future__ import annotations

from dataclasses import replace

from rich.text import Text

from folders.metrics import Metrics
from orchestrator.cli.status import _metrics_line
from orchestrator.recovery import size_text

FEW = Metrics(convergence=0.75, converged=3, concluded=4, conflict_rate=0.0833, frames_total=12,
              frames_in_conflict=1, frames_invalid=0, frames_disagreeing=0, access_p95_ms=3.21,
              access_samples=2, routes_per_goal=2.0, min_routes=1, goals=2, routes=4)


def _plain(markup: str) -> str:
    return Text.from_markup(markup).plain


def test_status_says_not_enough_data_once_when_nothing_can_be_judged():
    empty = replace(FEW, convergence=None, conflict_rate=None, access_p95_ms=None, routes_per_goal=None,
                    concluded=0, frames_total=0, access_samples=0, routes=0)
    assert _plain(_metrics_line(empty)) == "not enough data yet (the metrics fill in as the nodes work)"


def test_status_shows_each_metric_in_its_one_unit_beside_its_threshold():
    many = replace(FEW, convergence=0.93, converged=28, concluded=30, conflict_rate=0.0, frames_total=40,
                   routes=30)
    assert _plain(_metrics_line(many)) == ("convergence 93.0% (≥ 90.0%) · conflict rate 0.0% (≤ 5.0%) · "
                                           "access time 3.2 ms (≤ 200.0 ms) · routes per goal 2.0 (≥ 3.0)")
    assert _plain(_metrics_line(FEW)).startswith("convergence not enough data yet · conflict rate not enough")


def test_sizes_read_the_same_in_the_cli_and_the_tui():
    assert [size_text(s) for s in (None, 49_200, 999_999, 1_000_000, 5_250_000)] == [
        "arriving", "49.2 kB", "1.0 MB", "1.0 MB", "5.2 MB"]


def test_the_daemon_batch_line_reads_as_a_sentence():
    from orchestrator.pipeline import BatchReport
    assert BatchReport(committed=["a"], commits=[]).summary() == "1 valid frame; already in Git"
    assert BatchReport(committed=["a", "b"], commits=["c1"]).summary() == "2 valid frames; 1 Git commit"
    assert (BatchReport(invalid=["x"], conflicts=["y", "z"], rollbacks=["r"]).summary()
            == "1 invalid file, 2 conflict copies, 1 rollback held; no Git commit")
    assert BatchReport().summary() == "nothing to check; no Git commit"
