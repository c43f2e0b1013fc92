"""CLI start-up: what a person (or a reasoning engine calling the CLI) pays per command,
beside `python -c pass` measured in the same run, interleaved run by run so that the noise of
a shared machine falls on both alike.

Each command is a real `twinsync` subprocess; `status --json` talks to a real Syncthing.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.benchmarks.common import r
from tests.benchmarks.frames import TWINSYNC, Bench

#: Runs per command (the figure is the median; min and max are in the detail).
FULL_RUNS, QUICK_RUNS = 20, 7
TARGET_S = {"version": 0.15, "status_json": 0.3}


def _run_s(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child): CPU time is what a loaded machine inflates least."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _spread(times: list[float]) -> dict:
    return {"min": r(min(times)), "median": r(statistics.median(times)), "max": r(max(times))}


def measure_startup(bench: Bench, quick: bool) -> dict:
    with bench.step("startup: a node home against a real Syncthing"):
        node = bench.node("cli")
    commands = {
        "pass": [sys.executable, "-c", "pass"],
        "version": [TWINSYNC, "--version"],
        "status_json": [TWINSYNC, "status", "--json", "--home", str(node.home)],
    }
    # As installed, Python reads compiled bytecode; this environment may forbid writing it
    # (PYTHONDONTWRITEBYTECODE), so the runs keep theirs under the temp dir instead.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(bench.root / "pycache")
    for argv in commands.values():  # write the bytecode, warm the page cache and Syncthing
        _run_s(argv, env)
    runs = QUICK_RUNS if quick else FULL_RUNS
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    with bench.progress(f"startup: {runs} rounds of {', '.join(commands)}", runs) as advance:
        for _ in range(runs):
            for name, argv in commands.items():
                wall, used = _run_s(argv, env)
                times[name].append(wall)
                cpu[name].append(used)
            advance(1)
    value = {name: r(statistics.median(times[name])) for name in TARGET_S}
    base = r(statistics.median(times["pass"]))
    return {
        "figure": "startup", "n": runs, "unit": "s",
        "value": value, "baseline": base,
        "target": "median `twinsync --version` <= 0.15 s and `status --json` <= 0.3 s", "limit": TARGET_S,
        "meets_target": all(value[name] <= limit for name, limit in TARGET_S.items()),
        "detail": {"baseline_is": "`python -c pass` with the same interpreter, interleaved with the commands",
                   "bytecode": "cached, as an installed program runs (written by one warm-up run)",
                   "status_json_is": "`twinsync status --json` against the node's real Syncthing",
                   "added_over_baseline": {name: r(value[name] - base) for name in TARGET_S},
                   "runs": {name: _spread(t) for name, t in times.items()},
                   "cpu_s": {name: _spread(t) for name, t in cpu.items()},
                   "twinsync": str(Path(TWINSYNC))},
    }
