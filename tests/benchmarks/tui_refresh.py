"""TUI refresh benchmark: how long the real app takes to show a poll of a big node.

    .venv/bin/python -m tests.benchmarks.tui_refresh [--quick] [--refreshes N]

The real `TwinsyncApp` (tui.app.make_app) runs headless under `App.run_test()`, fed by a
fake service built on tests/tui/fakes.py's value objects: `BigService` generates N nodes
and M queue items (frame conflicts, invalid files and forks mixed, each fork with the
steps of its session). On every poll one node's step count and one conflict's state
carry the poll number, so each refresh is a real update of both tables.

One refresh is timed from `app.tick()` (what the refresh timer calls) until the first
screen update after the Nodes and Queue DataTables both hold the new rows and have
finished the work DataTable defers to its idle handler (column widths, row offsets):
that is when a terminal would show the new data. The Nodes tab is the visible one, as
after start-up; the Queue tab refreshes in the background (its count is in its tab),
so both tables update on every tick.

Baseline, measured in the same run: the same rows built by tui/rows.py's pure functions
alone (node_rows, queue_entries, filter_entries, queue_rows; no widgets), which is the
least any front end must do. For context, a plain rich Table render of the same rows
(to a 120-column console writing to memory) is measured too.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import pstats
import statistics
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from rich.console import Console
from rich.table import Table

from folders.decisions import Decision, ForkView
from folders.fingerprint import Fingerprint, FingerprintProblem, FingerprintView
from folders.trace import Step
from orchestrator.conflicts import ConflictItem
from orchestrator.pairing import PeerStatus
from orchestrator.recovery import NodeRow
from orchestrator.status import NodeStatus
from tests.benchmarks.common import percentile
from tests.tui.fakes import HOME, FakeService
from tui.app import TwinsyncApp, make_app
from tui.pane import KeyedTable
from tui.rows import NODE_COLUMNS, QUEUE_COLUMNS, filter_entries, node_rows, queue_entries, queue_rows
from tui.service import QueueData

TARGET_MS = 100.0
RENDER_REPEATS = 5
SIZE = (120, 36)
T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Sizes:
    nodes: int
    items: int  # queue items: 60% frame conflicts, 20% invalid files, 20% forks
    refreshes: int


FULL = Sizes(nodes=100, items=10_000, refreshes=30)
QUICK = Sizes(nodes=20, items=1_000, refreshes=20)


def _h(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def _ts(seconds: int, frac: bool = False) -> str:
    t = T0 + timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (".000000Z" if frac else "Z")


def _name(i: int) -> str:
    return f"node-{i:03d}"


def _device(i: int) -> str:
    return "-".join(f"{i:03d}{c}ABCD"[:7] for c in "QRSTUVWX")


# -- the data: a big node's answers, generated ------------------------------------------

class BigService(FakeService):
    """FakeService with `n_nodes` nodes and `n_items` open queue items; `generation`
    (set by the benchmark before each refresh) goes into one node row and one conflict."""

    def __init__(self, n_nodes: int, n_items: int) -> None:
        super().__init__()
        self.generation = 0
        self._nodes = [self._node(i) for i in range(n_nodes)]
        n_forks = n_items // 5
        n_invalid = n_items // 5
        n_conflicts = n_items - n_forks - n_invalid
        self._conflicts = [self._conflict(i, n_nodes) for i in range(n_conflicts)]
        self._conflicts += [self._invalid(n_conflicts + i) for i in range(n_invalid)]
        self._forks, self._steps = [], {}
        for i in range(n_forks):
            fork, steps = self._fork(i, n_nodes)
            self._forks.append(fork)
            self._steps[fork.session] = steps
        self.peers = [PeerStatus(_name(i), _device(i), i % 7 != 0, f"127.0.0.1:{22000 + i}", _ts(400_000 + i))
                      for i in range(1, n_nodes)]

    # generated values

    @staticmethod
    def _node(i: int) -> NodeRow:
        name = _name(i)
        path = HOME / "trace/recovery" / name / "fingerprint.json"
        if i % 25 == 13:  # a few unusable fingerprints
            view = FingerprintView(path, name, False, FingerprintProblem("bad_signature", "does not verify"),
                                   None, True, None)
            return NodeRow(name, None, None, view, None)
        metrics = {"convergence": 0.5 + (i % 50) / 100, "conflict_rate": (i % 9) / 100,
                   "access_p95_ms": 2.0 + i % 300, "routes_per_goal": None if i % 11 == 0 else 1 + i % 4}
        fp = Fingerprint(node=name, device_id=_device(i), version="0.1.0", created=_ts(400_000 - i * 60),
                         frames_root=_h(1 if i % 10 else 2), frames_count=1200, trace_steps=10_000 + i,
                         trace_sessions=90 + i, trace_head=_h(1000 + i), last_publish=_ts(400_000 - i * 60),
                         last_merge=_ts(399_000), pending_conflicts=i % 4, pending_forks=i % 3,
                         metrics=metrics, sig="ed25519:fake")
        view = FingerprintView(path, name, True, None, fp, i % 9 == 0, timedelta(minutes=i))
        return NodeRow(name, _device(i), i % 7 != 0, view, i % 10 != 0)

    @staticmethod
    def _conflict(i: int, n_nodes: int) -> ConflictItem:
        frame = f"notes/ns{i % 100:02d}/frame{i:05d}"
        device = _device(1 + i % max(1, n_nodes - 1))[:7]
        return ConflictItem(
            id=i + 1, kind="conflict", frame=frame, path=f"{frame}.frame.json",
            copy_path=f"{frame}.frame.sync-conflict-20261125-080000-{device}.json", device=device,
            status="open", reason=None, branch=f"fork/{frame}/{device}-20261125-080000",
            ours_hash=_h(2 * i), theirs_hash=_h(2 * i + 1), ours_author=_name(0),
            theirs_author=_name(1 + i % max(1, n_nodes - 1)), created=_ts(i * 37),
            decided_by=None, decided_at=None)

    @staticmethod
    def _invalid(i: int) -> ConflictItem:
        path = f"notes/ns{i % 100:02d}/broken{i:05d}.frame.json"
        return ConflictItem(
            id=i + 1, kind="invalid", frame=None, path=path, copy_path=None, device=None, status="open",
            reason=f"bad_schema: {path} is not a frame: it has no hash.", branch=None, ours_hash=None,
            theirs_hash=None, ours_author=None, theirs_author=None, created=_ts(i * 37 + 11),
            decided_by=None, decided_at=None)

    @staticmethod
    def _fork(i: int, n_nodes: int) -> tuple[ForkView, list[Step]]:
        session = f"sess-{i:028x}"
        goal = f"goal {i}: plan the week"
        a, b = _name(i % n_nodes), _name((i + 1) % n_nodes)
        base = 1_000_000 + i * 10
        t = i * 41 + 5
        steps = [Step(_h(base), session, goal, None, a, _ts(t, True), "observation", "Monday is full"),
                 Step(_h(base + 1), session, goal, _h(base), a, _ts(t + 60, True), "conclusion", "gym on Thursday"),
                 Step(_h(base + 2), session, goal, _h(base + 1), a, _ts(t + 120, True), "action", "book it"),
                 Step(_h(base + 3), session, goal, _h(base), b, _ts(t + 90, True), "observation", "the gym is shut"),
                 Step(_h(base + 4), session, goal, _h(base + 3), b, _ts(t + 150, True), "conclusion", "run outside")]
        decision = (Decision(_h(base + 9), b, _ts(t + 200, True), _h(base + 3), "approve") if i % 3 == 0 else None)
        fork = ForkView(id=f"{i:012x}", session=session, goal=goal, parent=_h(base),
                        branches=(_h(base + 1), _h(base + 3)), consensus_branch=_h(base + 1),
                        decision=decision, chosen=_h(base + 3) if decision else _h(base + 1))
        return fork, steps

    # the service calls the refresh makes

    def status(self) -> NodeStatus:
        status = super().status()
        return replace(status, node=_name(0), device_id=_device(0), peers=list(self.peers))

    def nodes(self) -> list[NodeRow]:
        rows = list(self._nodes)
        first = rows[0]
        fp = replace(first.fingerprint.fingerprint, trace_steps=self.generation)
        rows[0] = replace(first, fingerprint=replace(first.fingerprint, fingerprint=fp))
        return rows

    def queue(self, *, history: bool = False) -> QueueData:
        conflicts = list(self._conflicts)
        conflicts[0] = replace(conflicts[0], reason=f"open {self.generation}", kind="invalid")
        return QueueData(conflicts, list(self._forks), dict(self._steps))

    # what the tables must show for `generation`

    def expected(self) -> tuple[str, str, str, str]:
        """(node key, its steps cell, queue key, its state cell)."""
        return _name(0), str(self.generation), f"conflict:{self._conflicts[0].id}", f"open {self.generation}"


# -- the measurement -----------------------------------------------------------------------

def _stats(ms: list[float]) -> dict:
    return {"p50": round(percentile(ms, 0.5), 1), "p95": round(percentile(ms, 0.95), 1), "max": round(max(ms), 1)}


def _cell(table: KeyedTable, key: str, column: int) -> str | None:
    try:
        return table.get_row(key)[column].plain
    except Exception:  # noqa: BLE001 - row not there (yet)
        return None


def _settled(table: KeyedTable) -> bool:
    """DataTable defers column widths and row offsets to its idle handler; until that has
    run, what it would paint is not the new data's layout."""
    return not table._require_update_dimensions and not table._new_rows and not table._updated_cells


class _Probe:
    """Watches the running app: when both tables hold generation `g`'s rows and have
    settled, and when the screen is next updated after that."""

    def __init__(self, app: TwinsyncApp, service: BigService) -> None:
        self.app, self.service = app, service
        self.nodes = app.query_one("#nodes-table", KeyedTable)
        self.queue = app.query_one("#queue-table", KeyedTable)
        self.data_at: float | None = None
        self.painted_at: float | None = None
        original = app._display

        def display(screen, renderable) -> None:  # every screen update goes through here
            original(screen, renderable)
            if renderable is not None and self.painted_at is None and self.ready():
                self.painted_at = time.perf_counter()

        app._display = display  # an instance attribute: the app's code is untouched
        # where the time goes, per refresh: wrapped on these two instances only
        self.spent: dict[str, float] = {}
        for table in (self.nodes, self.queue):
            for method in ("show", "_update_dimensions"):
                self._time(table, method, f"{table.id}.{method}")
        self._gc_started: float | None = None
        gc.callbacks.append(self._gc)

    def _time(self, obj: object, method: str, label: str) -> None:
        original = getattr(obj, method)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.spent[label] = self.spent.get(label, 0.0) + time.perf_counter() - started

        setattr(obj, method, timed)

    def _gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            label = f"gc_gen{info['generation']}"
            self.spent[label] = self.spent.get(label, 0.0) + time.perf_counter() - self._gc_started

    def close(self) -> None:
        gc.callbacks.remove(self._gc)

    def has_data(self) -> bool:
        node_key, steps, queue_key, state = self.service.expected()
        return (_cell(self.nodes, node_key, NODE_COLUMNS.index("steps")) == steps
                and _cell(self.queue, queue_key, QUEUE_COLUMNS.index("state")) == state)

    def ready(self) -> bool:
        return self.has_data() and _settled(self.nodes) and _settled(self.queue)

    async def refresh(self, generation: int, timeout: float = 60.0) -> tuple[float, float, float]:
        """One tick; returns (ms to data in both tables, ms to settled, ms to screen update)."""
        self.service.generation = generation
        self.data_at = self.painted_at = None
        self.spent = {}
        settled_at = None
        started = time.perf_counter()
        self.app.tick()
        while self.painted_at is None:
            await asyncio.sleep(0.0005)
            now = time.perf_counter()
            if self.data_at is None and self.has_data():
                self.data_at = now
            if settled_at is None and self.ready():
                settled_at = now
            if now - started > timeout:
                raise TimeoutError(f"refresh {generation} not shown after {timeout:.0f} s")
        data_at = self.data_at or self.painted_at
        settled_at = min(settled_at or self.painted_at, self.painted_at)
        return tuple(round((t - started) * 1000, 2) for t in (data_at, settled_at, self.painted_at))


async def _quiet(app: TwinsyncApp) -> None:
    await app.workers.wait_for_complete()
    await asyncio.sleep(0.05)


async def _drive(service: BigService, refreshes: int, profile: cProfile.Profile | None = None) -> dict:
    app = make_app("/nonexistent", refresh_s=3600, service=service)  # the timer never fires by itself
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(3):  # the first load, as the user sees it at start
            await pilot.pause()
            await app.workers.wait_for_complete()
        probe = _Probe(app, service)
        assert app.active_tab == "nodes"
        first = await probe.refresh(1)  # warm-up: caches, first layout of the full tables
        await _quiet(app)
        data, settled, painted, spent = [], [], [], []
        try:
            for g in range(2, refreshes + 2):
                gc.collect()
                if profile is not None:
                    profile.enable()
                d, s, p = await probe.refresh(g)
                if profile is not None:
                    profile.disable()
                data.append(d)
                settled.append(s)
                painted.append(p)
                spent.append(dict(probe.spent))
                await _quiet(app)
        finally:
            probe.close()
        rows = (probe.nodes.row_count, probe.queue.row_count)
        label = str(app.query_one("#tabs").get_tab("queue").label)
    labels = sorted({k for one in spent for k in one})
    breakdown = {k: round(statistics.median(one.get(k, 0.0) * 1000 for one in spent), 1) for k in labels}
    return {"data": data, "settled": settled, "painted": painted, "warmup_ms": first[2],
            "rows_shown": rows, "queue_tab_label": label, "breakdown": breakdown}


def _baselines(service: BigService, repeats: int) -> tuple[list[float], list[float]]:
    """ms to build the rows with tui/rows.py alone; ms for a plain rich Table render of them."""
    status = service.status()
    peers = {p.name: p for p in status.peers}
    build, render = [], []
    for g in range(repeats):
        service.generation = 10_000 + g
        nodes, queue = service.nodes(), service.queue()
        gc.collect()
        t = time.perf_counter()
        n_rows = node_rows(nodes, peers, status.node)
        q_rows = queue_rows(filter_entries(queue_entries(queue), ""))
        build.append((time.perf_counter() - t) * 1000)
        if g >= RENDER_REPEATS:  # seconds each at full size: a few are enough for context
            continue
        gc.collect()
        console = Console(file=io.StringIO(), width=SIZE[0], force_terminal=True, color_system="truecolor")
        t = time.perf_counter()
        for columns, rows in ((NODE_COLUMNS, n_rows), (QUEUE_COLUMNS, q_rows)):
            table = Table(*columns)
            for row in rows:
                table.add_row(*row.cells)
            console.print(table)
        render.append((time.perf_counter() - t) * 1000)
    return build, render


def _profile_top(profile: cProfile.Profile, n: int = 25) -> str:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(n)
    return out.getvalue()


def measure_tui_refresh(console: Console, quick: bool, *, refreshes: int | None = None,
                        profile_out: str | None = None) -> dict:
    sizes = QUICK if quick else FULL
    n = refreshes or sizes.refreshes
    with console.status(f"tui_refresh: generating {sizes.nodes} nodes and {sizes.items:,} queue items …"):
        service = BigService(sizes.nodes, sizes.items)
    with console.status(f"tui_refresh: baseline, rows built with tui/rows.py ({n} times) …"):
        build, render = _baselines(service, n)
    with console.status(f"tui_refresh: {n} refreshes of the headless app …"):
        started = time.perf_counter()
        run = asyncio.run(_drive(service, n))
        console.print(f"[green]✓[/] tui_refresh: {n} refreshes [dim]{time.perf_counter() - started:.1f} s[/]")
    if profile_out:
        profile = cProfile.Profile()
        asyncio.run(_drive(BigService(sizes.nodes, sizes.items), min(n, 5), profile))
        profile.dump_stats(profile_out)
        console.print(_profile_top(profile))
    value = _stats(run["painted"])
    base = _stats(build)
    return {
        "figure": "tui_refresh", "n": {"nodes": sizes.nodes, "queue_items": sizes.items, "refreshes": n},
        "unit": "ms", "value": value, "baseline": base,
        "target": f"p95 <= {TARGET_MS:.0f} ms per refresh", "limit": {"p95": TARGET_MS},
        "meets_target": value["p95"] <= TARGET_MS,
        "detail": {
            "value_is": "headless TwinsyncApp (run_test, 120x36, Nodes tab shown): app.tick() until the "
                        "first screen update after the Nodes and Queue DataTables both hold the new rows "
                        "and have run their deferred idle layout",
            "baseline_is": "the same rows built by tui/rows.py alone: node_rows + queue_entries + "
                           "filter_entries + queue_rows, no widgets",
            "until_rows_in_tables_ms": _stats(run["data"]),
            "until_tables_settled_ms": _stats(run["settled"]),
            "rich_table_render_ms": _stats(render),
            "rich_table_render_is": f"rich Table of the same rows printed to a 120-column in-memory console "
                                    f"({len(render)} runs)",
            "breakdown_p50_ms": run["breakdown"],
            "breakdown_is": "median ms per refresh inside KeyedTable.show (changed cells updated in place, rows added or removed) and "
                            "DataTable._update_dimensions (its idle handler: measures every new cell) of each "
                            "table, and in Python's garbage collector (any phase, by generation)",
            "first_refresh_ms": run["warmup_ms"],
            "rows_shown": {"nodes": run["rows_shown"][0], "queue": run["rows_shown"][1]},
            "queue_tab_label": run["queue_tab_label"],
            "mix": "60% frame conflicts, 20% invalid files, 20% forks (5 steps each); one node's steps and "
                   "one conflict's state change on every refresh",
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.tui_refresh",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK.nodes} nodes, {QUICK.items:,} items")
    parser.add_argument("--refreshes", type=int, default=None, help="timed refreshes (default 30, quick 20)")
    parser.add_argument("--profile", metavar="FILE", help="also run 5 refreshes under cProfile, dump stats to FILE")
    args = parser.parse_args(argv)
    console = Console(file=sys.stderr)
    print(json.dumps(measure_tui_refresh(console, args.quick, refreshes=args.refreshes, profile_out=args.profile),
                     ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
