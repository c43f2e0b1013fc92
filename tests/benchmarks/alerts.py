"""Figure `alert_tick`: what one look of the daemon's alert piece costs (`observe`: the
queue, forks, peers, fingerprints, pieces and health), on a node with many open queue
items, beside `recovery.nodes` (what `twinsync nodes` and the TUI's Nodes tab already do
every refresh) on the same node in the same run."""

from __future__ import annotations

from folders.trace import utc_now
from orchestrator import recovery
from orchestrator.alerts import observe
from orchestrator.config import AlertSettings
from orchestrator.frames import pipeline_for
from orchestrator.node import Node
from tests.benchmarks.common import r
from tests.benchmarks.frames import Bench, median_time

FULL_ITEMS, QUICK_ITEMS = 500, 50
RUNS = 7


def measure_alert_tick(bench: Bench, quick: bool) -> dict:
    items = QUICK_ITEMS if quick else FULL_ITEMS
    with bench.step(f"alert_tick: a node with {items} open queue items"):
        node_home = bench.node("alerts").home
        root = node_home / "frames.shared" / "bench"
        root.mkdir(parents=True)
        for i in range(items):
            (root / f"bad{i:05d}.frame.json").write_text("{not json")
        with Node.open(node_home) as node, pipeline_for(node) as pipeline:
            pipeline.process(pipeline.changed_on_disk())
    with Node.open(node_home) as node, bench.step(f"alert_tick: observe() and recovery.nodes(), {RUNS} runs each"):
        observed = observe(node, now=utc_now())
        if len(observed.queue) != items:
            raise AssertionError(f"observe() saw {len(observed.queue)} queue items, expected {items}")
        ours, ours_runs, _ = median_time(lambda: observe(node), RUNS)
        base, base_runs, _ = median_time(lambda: recovery.nodes(node), RUNS)
    interval = AlertSettings().interval_s
    return {
        "figure": "alert_tick", "n": items, "unit": "s",
        "value": r(ours), "baseline": r(base), "target": "<= 5 x baseline", "limit": r(5 * base),
        "meets_target": ours <= 5 * base, "ratio": r(ours / base, 2),
        "detail": {"value_min_median_max": [r(min(ours_runs)), r(ours), r(max(ours_runs))],
                   "baseline_min_median_max": [r(min(base_runs)), r(base), r(max(base_runs))],
                   "share_of_one_core_at_default_interval": r(ours / interval, 5),
                   "interval_s": interval},
    }
