"""Frame benchmarks in one command:

    .venv/bin/python -m tests.benchmarks.run [--quick] [--only FIGURE,...]

Prints one JSON object per figure on stdout (figure, value, baseline measured in the same
run, unit, target, limit, meets_target, detail); progress goes to stderr. Everything lives
in a temp dir that is removed at the end, and every process started is stopped, also on
Ctrl-C or SIGTERM. Sizes: see `frames.FULL` and `frames.QUICK`.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.logging import RichHandler

from tests.benchmarks import alerts, frames, link, modules, routing, scale, startup, traces, tui_refresh

FIGURES = ("startup", "propagation", "reconcile", "commit", "verify", "delete", "idle", "merge", "query",
           "restore", "tui_refresh", "alert_tick", "routing", "profile_build", "sandbox", "ask", "ask_50ms", "finish_to_answer", "scale")
TRACE_FIGURES = {"merge": traces.measure_merge, "query": traces.measure_query, "restore": traces.measure_restore}


def _interrupt(signum, frame):  # noqa: ARG001 - SIGTERM ends the run like Ctrl-C does
    raise KeyboardInterrupt


def _leftover_children(console: Console) -> None:
    """Every process we started must be gone; anything left is ours, so stop it by pid."""
    me = psutil.Process()
    deadline = time.monotonic() + 5
    left = []
    while time.monotonic() < deadline:
        left = [p for p in me.children(recursive=True)
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not left:
            return
        time.sleep(0.1)
    for p in left:
        console.print(f"[red]stopping leftover child process {p.pid}: {' '.join(p.cmdline())}[/]")
        p.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke check in under a minute")
    parser.add_argument("--only", default=",".join(FIGURES),
                        help=f"comma-separated figures to run (default: all of {', '.join(FIGURES)})")
    args = parser.parse_args(argv)
    wanted = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = set(wanted) - set(FIGURES)
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(sorted(unknown))}; choose from {', '.join(FIGURES)}")
    sizes = frames.QUICK if args.quick else frames.FULL

    console = Console(file=sys.stderr)  # bound now: the in-process CLI swaps sys.stderr
    logging.basicConfig(level=logging.ERROR, handlers=[RichHandler(console=console, show_path=False)])
    signal.signal(signal.SIGTERM, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="twinsync-bench-"))
    bench = frames.Bench(tmp, console)
    started = time.perf_counter()
    console.print(f"twinsync frame benchmarks ({'quick' if args.quick else 'full'}: {sizes}) in {tmp}")

    def emit(result: dict) -> None:
        print(json.dumps(result, ensure_ascii=False), flush=True)

    code = 0
    try:
        if "startup" in wanted:
            emit(startup.measure_startup(bench, args.quick))
            bench.close()
        if "propagation" in wanted:
            emit(frames.measure_propagation(bench, sizes.propagation))
            bench.close()  # stop nodes A and B so they do not compete with what follows
        big = None
        if "reconcile" in wanted or "idle" in wanted:
            big = frames.build_big_home(bench, sizes.big)
        if "reconcile" in wanted:
            emit(frames.measure_reconcile(bench, big))
        if {"commit", "verify", "delete"} & set(wanted):
            commit, verify, delete = frames.measure_batch(bench, sizes.batch)
            for figure in (commit, verify, delete):
                if figure["figure"] in wanted:
                    emit(figure)
        if "idle" in wanted:
            emit(frames.measure_idle(bench, big, sizes.idle_sample_s, sizes.idle_steps))
        bench.close()
        trace_sizes = traces.QUICK if args.quick else traces.FULL
        for figure, measure in TRACE_FIGURES.items():  # restore last: it grows node a's trace
            if figure in wanted:
                emit(measure(tmp, console, trace_sizes))
        if "tui_refresh" in wanted:
            emit(tui_refresh.measure_tui_refresh(console, args.quick))
        if "alert_tick" in wanted:
            emit(alerts.measure_alert_tick(bench, args.quick))
            bench.close()
        if "routing" in wanted:  # one line per representation, beside random and namespaces
            for figure in routing.measure_precision(console, args.quick):
                emit(figure)
        if "profile_build" in wanted:
            emit(routing.measure_profile_build(tmp, console, args.quick))
        if "sandbox" in wanted:
            emit(modules.measure_sandbox(console, args.quick))
        if "ask" in wanted:
            emit(link.measure_ask(bench, args.quick))
            bench.close()
        if "ask_50ms" in wanted:
            emit(link.measure_ask_delayed(bench, args.quick))
            bench.close()
        if "finish_to_answer" in wanted:
            emit(link.measure_finish_to_answer(bench, args.quick))
            bench.close()
        if "scale" in wanted:  # last and alone: it runs up to 10 nodes at once
            for figure in scale.measure_scale(console, tmp, args.quick):
                emit(figure)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping every process and removing the temp dir[/]")
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            bench.close()
            _leftover_children(console)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            console.print(f"wall time {time.perf_counter() - started:.1f} s; removed {tmp}")
    return code


if __name__ == "__main__":
    sys.exit(main())
