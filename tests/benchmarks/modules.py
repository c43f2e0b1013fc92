"""What running a reasoning module costs: the demo's agent (a Python `module:function`
entry) run through `orchestrator.sandbox.run` (launcher, rlimits, scratch dir, clean env,
output to files, process-group kill), against the same argv run by a bare
`subprocess.run` with pipes, alternating which goes first."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from rich.console import Console

from orchestrator import sandbox
from orchestrator.demo import AGENT_SOURCE
from orchestrator.modules import _PYTHON_RUNNER
from tests.benchmarks.common import r, step

#: The sandbox may add one interpreter start (the launcher) and its file handling.
TARGET_EXTRA_S = 0.15


def measure_sandbox(console: Console, quick: bool) -> dict:
    runs = 10 if quick else 50
    argv = [sys.executable, "-I", "-c", _PYTHON_RUNNER, str(AGENT_SOURCE), "agent:answer"]
    request = json.dumps({"twinsync": 1, "goal": "plan the week", "node": "bench", "context": {"n": 1}}).encode()
    ours, bare = [], []

    def run_ours() -> None:
        started = time.perf_counter()
        result = sandbox.run(argv, stdin=request, what="the demo agent")
        ours.append(time.perf_counter() - started)
        assert result.ok, result.reason

    def run_bare() -> None:
        started = time.perf_counter()
        done = subprocess.run(argv, input=request, capture_output=True, check=True)
        bare.append(time.perf_counter() - started)
        assert b"conclusion" in done.stdout

    with step(console, f"sandbox: {runs} runs of the demo agent, sandboxed and bare, alternating"):
        for i in range(runs):
            for fn in ((run_ours, run_bare) if i % 2 == 0 else (run_bare, run_ours)):
                fn()
    stats = lambda xs: {"min": r(min(xs)), "median": r(statistics.median(xs)), "max": r(max(xs))}  # noqa: E731
    value, base = stats(ours), stats(bare)
    return {"figure": "sandbox", "n": runs, "unit": "s", "value": value, "baseline": base,
            "target": f"median <= baseline median + {TARGET_EXTRA_S} s",
            "meets_target": value["median"] <= base["median"] + TARGET_EXTRA_S,
            "detail": {"value_is": "sandbox.run of the demo agent's Python entry (time, memory and output "
                                   "limits, scratch dir, whitelisted env), wall time per run",
                       "baseline_is": "subprocess.run of the same argv and stdin with pipes, wall time per run"}}
