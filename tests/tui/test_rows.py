"""The pure functions behind the tables: value objects in, rows out."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from dataclasses import replace

from tests.tui.fakes import CONFLICT, FORK, INVALID, SESSION, STEPS, FakeService
from folders.metrics import threshold_text
from tui.rows import (NODE_COLUMNS, filter_entries, fingerprint_metric_cell, format_metric, judged_cell,
                      node_detail, node_rows, queue_entries)
from tui.service import QueueData


def test_seed_metrics_are_green_when_met_red_when_not_grey_when_unmeasured():
    assert [threshold_text(n) for n in ("convergence", "conflict_rate", "access_p95_ms", "routes_per_goal")] == \
        ["≥ 90.0%", "≤ 5.0%", "≤ 200.0 ms", "≥ 3.0"]
    assert judged_cell("convergence", 0.9, True, "") == Text("90.0%", style="green")
    assert judged_cell("access_p95_ms", 250.0, False, "") == Text("250.0 ms", style="red")
    assert judged_cell("routes_per_goal", None, None, "—") == Text("—", style="bright_black")
    assert format_metric("conflict_rate", None) == "—"


def test_a_fresh_nodes_few_frames_read_too_few_not_a_red_rate():
    """The fresh node that flashed `confl. 75.0%`: 3 of its 4 frames still differing."""
    fp = FakeService().nodes()[0].fingerprint.fingerprint
    fresh = replace(fp, frames_count=4, trace_sessions=2,
                    metrics={"convergence": 1.0, "conflict_rate": 0.75, "access_p95_ms": 1.0, "routes_per_goal": 1.0})
    cells = {m: fingerprint_metric_cell(fresh, m) for m in fresh.metrics}
    assert {m: (c.plain, str(c.style)) for m, c in cells.items()} == {
        "convergence": ("too few", "bright_black"), "conflict_rate": ("too few", "bright_black"),
        "access_p95_ms": ("1.0 ms", "green"), "routes_per_goal": ("too few", "bright_black")}
    settled = replace(fresh, frames_count=40, trace_sessions=30)
    assert fingerprint_metric_cell(settled, "conflict_rate") == Text("75.0%", style="red")
    assert fingerprint_metric_cell(settled, "routes_per_goal") == Text("1.0", style="red")


def test_node_rows_dim_stale_fingerprints_and_show_unusable_ones_with_their_problem():
    service = FakeService()
    peers = {p.name: p for p in service.status().peers}
    rows = {r.key: r.cells for r in node_rows(service.nodes(), peers, "laptop")}
    assert list(rows) == ["desktop", "ghost", "laptop", "server"]
    assert all(len(cells) == len(NODE_COLUMNS) for cells in rows.values())
    col = NODE_COLUMNS.index
    assert str(rows["laptop"][0]) == "laptop *" and str(rows["laptop"][col("seen")]) == "now"
    assert str(rows["ghost"][col("updated")]) == "bad_signature"
    server = rows["server"]
    assert all(isinstance(c, Text) and any("dim" in str(s.style) for s in c.spans) for c in server)
    assert not any("dim" in str(s.style) for c in rows["desktop"] for s in c.spans)
    assert str(server[col("frames")]) == "differ" and str(server[-1]) == "—"
    # a gap waited on longer than gap_warning_s, and a refused file, are red on the row
    assert str(server[col("pieces")]) == "late #5, 1 refused"
    assert "red" in str(server[col("pieces")].style) and str(rows["desktop"][col("pieces")]) == "ok"
    # each peer's link as the daemon last pinged it; this node has none
    assert str(rows["desktop"][col("link")]) == "3 ms" and str(server[col("link")]) == "down"
    assert "red" in str(server[col("link")].style) and str(rows["laptop"][col("link")]) == "-"


def test_node_rows_show_each_peers_rates_and_out_of_sync_items():
    service = FakeService()
    traffic = {t.name: t for t in service.traffic()}
    rows = {r.key: r.cells for r in node_rows(service.nodes(), {}, "laptop", traffic)}
    down_up, behind = NODE_COLUMNS.index("↓ / ↑"), NODE_COLUMNS.index("behind")
    assert str(rows["desktop"][down_up]) == "12.4 kB/s / 1.9 kB/s" and str(rows["desktop"][behind]) == "3"
    assert "red" in str(rows["desktop"][behind].style)  # out of sync
    assert str(rows["server"][down_up]) == "paused" and str(rows["server"][behind]) == "0"
    assert str(rows["laptop"][down_up]) == "-" and str(rows["ghost"][behind]) == "-"  # not peers
    desktop = next(r for r in service.nodes() if r.name == "desktop")
    console = Console(width=120, record=True)
    console.print(node_detail(desktop, service.status(), traffic["desktop"]))
    assert "↓ 12.4 kB/s · ↑ 1.9 kB/s · out of sync there: 3 item(s), 48,000 bytes" in console.export_text()


def test_queue_is_one_list_newest_first_and_filters_on_every_word():
    entries = queue_entries(QueueData([INVALID, CONFLICT], [FORK], {SESSION: STEPS}))
    assert [e.kind for e in entries] == ["conflict", "invalid", "fork"]
    assert entries[2].when == "2026-11-25T07:30:00Z" and entries[2].state == "approved on desktop"
    assert [e.subject for e in filter_entries(entries, "NOTES")] == ["notes/today", "notes/forged.frame.json"]
    assert [e.kind for e in filter_entries(entries, "desktop open")] == ["conflict"]
    assert filter_entries(entries, "nothing-like-this") == []
