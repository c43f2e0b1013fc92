"""`twinsync demo`."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from folders.metrics import METRIC_NAMES, NOT_ENOUGH_DATA, format_metric, threshold_text
from orchestrator.cli.common import JsonOption, print_json
from orchestrator.demo import Demo, DemoEnd, DemoStopped, Timeline, demo_end
from orchestrator.logfile import logs_to
from syncthing.topology import KINDS


#: The demo's own log file in its directory: a warning (a scan refused while a node's
#: folder is paused on purpose) must not land in the middle of its output or its TUI.
LOG_NAME = "demo.log"


class TimelinePrinter:
    """Prints each new timeline entry to the terminal, except while the TUI has it: what the
    TUI showed is not printed again after it closes."""

    def __init__(self, timeline: Timeline, say: Callable[[str], None]) -> None:
        self.timeline, self.say = timeline, say
        self._printed = 0
        self._paused = False
        self._lock = threading.Lock()  # the demo's thread prints, the main thread pauses
        timeline.follow(self)

    def __call__(self) -> None:
        with self._lock:
            entries = self.timeline.view().entries
            if not self._paused:
                for entry in entries[self._printed:]:
                    self.say(entry.text)
            self._printed = len(entries)

    def pause(self) -> None:
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._printed = len(self.timeline.view().entries)


def _finish(runner: Demo, duration: float, stop: threading.Event, outcome: dict[str, object]) -> None:
    """The demo's thread while the TUI runs: its metrics, or the error to raise after the TUI."""
    try:
        outcome["metrics"] = runner.finish(duration, stop)
    except DemoStopped:
        pass  # Ctrl-C: the main thread says so
    except Exception as exc:  # noqa: BLE001 - raised again in the main thread once the TUI is closed
        outcome["error"] = exc
        runner.timeline.end(DemoEnd(False, ((False, f"the demo failed: {exc} ({LOG_NAME} says more)"),)))
        runner.close()


def demo(
    nodes: Annotated[int, typer.Option("--nodes", min=2, max=12, help="How many nodes to run (10 fit a 2-core machine: docs/scale.md).")] = 3,
    topology: Annotated[str, typer.Option("--topology", help="swarm, star (node1 is the master), sharded "
                                          "(facts only on node1 and node2) or p2p.")] = "swarm",
    duration: Annotated[float, typer.Option("--duration", min=5, help="Seconds of simulated reasoning.")] = 60,
    no_tui: Annotated[bool, typer.Option("--no-tui", help="Print a live summary instead of opening the TUI.")] = False,
    directory: Annotated[Optional[Path], typer.Option("--dir", help="Where the node homes go (default: a new temp dir).")] = None,
    as_json: JsonOption = False,
) -> None:
    """See the whole system live: N real Syncthing nodes on 127.0.0.1, daemons, simulated
    reasoning agents, a conflict, a node cut off and healed, a restore that forks.

    Ends with the seed metrics of every node, its processes stopped. The TUI (on node1)
    shows the demo's timeline as it happens, then each node's result until you press q.
    Log lines go to demo.log in its directory. Ctrl-C stops everything, leaves no process
    and removes the temporary directory (one given with --dir stays).
    Exit code 0 when every node meets the seed thresholds, 1 when one does not.

    Example: twinsync demo --nodes 3 --no-tui --duration 30
    """
    if directory is not None and directory.exists() and any(directory.iterdir()):
        raise typer.BadParameter(f"{directory} is not empty; pass an empty or new --dir.")
    if topology not in KINDS:
        raise typer.BadParameter(f"--topology must be one of {', '.join(KINDS)}.")
    root = directory or Path(tempfile.mkdtemp(prefix="twinsync-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True, soft_wrap=True)  # a path is never broken over lines
    say = lambda text: console.print(f"[cyan]demo[/] {text}", highlight=False)  # noqa: E731
    say(f"node homes in {root}; log lines in {root / LOG_NAME}")
    runner = Demo(root, nodes, topology=topology)
    printer = TimelinePrinter(runner.timeline, say)
    stop = threading.Event()
    worker: threading.Thread | None = None
    try:
        with logs_to(root / LOG_NAME):
            with console.status("Starting Syncthing nodes and pairing them…"):
                runner.setup()
            if no_tui or as_json:
                metrics = runner.finish(duration, stop, progress=say)
            else:
                printer.pause()  # the TUI shows the timeline: the terminal is its own meanwhile
                outcome: dict[str, object] = {}
                worker = threading.Thread(target=_finish, args=(runner, duration, stop, outcome),
                                          name="demo", daemon=True)
                worker.start()
                from tui.app import run_app
                try:
                    run_app(runner.nodes[0].home, demo=runner.timeline)
                finally:
                    stop.set()
                printer.resume()
                if worker.is_alive():
                    say(f"the TUI closed before the demo's end: it stages what is left, settles, measures and stops "
                        f"its {nodes} nodes (Ctrl-C stops at once)")
                worker.join()
                if "error" in outcome:
                    raise outcome["error"]  # type: ignore[misc]
                metrics = outcome["metrics"]  # type: ignore[assignment]
    except KeyboardInterrupt:
        stop.set()
        printer.resume()
        console.print("[yellow]interrupted[/]: stopping every process")
        runner.close()
        if worker is not None:
            worker.join(30)  # it gives up at its next step; then nothing writes in root
        if directory is None:
            shutil.rmtree(root, ignore_errors=True)
            if root.exists():
                console.print(f"could not remove all of {root}; remove it by hand", highlight=False)
            else:
                console.print(f"removed {root}", highlight=False)
        else:
            console.print(f"the node homes stay in {root}", highlight=False)
        raise typer.Exit(130) from None
    except BaseException:
        say(f"the node homes stay in {root}")
        raise
    finally:
        runner.close()
    meets = demo_end(metrics).meets
    if as_json:
        print_json({"dir": str(root), "nodes": {n: {**m.summary(), "access_samples": m.access_samples,
                                                    "meets": m.meets()} for n, m in metrics.items()},
                    "thresholds": {k: threshold_text(k) for k in METRIC_NAMES}, "events": runner.events,
                    "meets": meets})
    else:
        table = Table("metric", "threshold", *metrics)
        for name in METRIC_NAMES:
            cells = []
            for m in metrics.values():
                verdict = m.verdict(name)
                if verdict is None:
                    cells.append(f"[bright_black]{NOT_ENOUGH_DATA}[/]")
                else:
                    cells.append(f"[{'green' if verdict else 'red'}]{format_metric(name, getattr(m, name))}[/]")
            table.add_row(name, threshold_text(name), *cells)
        Console().print(table)
        asks = ", ".join(f"{n} {m.access_samples}" for n, m in metrics.items())
        typer.echo(f"access_p95_ms is the network's answer time: the p95 of asks each node sent its peers over "
                   f"the peer link (asks answered: {asks}).")
        typer.echo(f"The node homes are in {root} (Syncthing stopped; `twinsync conflicts --home {root}/node1` still works).")
    if not meets:
        raise typer.Exit(1)
