"""`twinsync status`, `doctor`."""

from __future__ import annotations

import typer

from folders.metrics import METRIC_NAMES, METRIC_WORDS, NOT_ENOUGH_DATA, Metrics, format_metric, threshold_text
from orchestrator.cli.common import HomeOption, JsonOption, open_node, print_json
from folders.errors import TwinsyncError
from folders.layout import NoNodeError
from syncthing.errors import SyncthingError
from orchestrator.node import INTERACTIVE_TIMEOUT
from orchestrator.broker import NOT_CONFIGURED, REACHABLE
from orchestrator.heartbeat import DEGRADED, NOT_RUNNING, RUNNING
from orchestrator.status import node_status
from orchestrator.metrics import node_metrics


def status(home: HomeOption, as_json: JsonOption = False) -> None:
    """Show this node, its Syncthing, its daemon, its seed metrics, folders and peers.

    The daemon is running, degraded (a part of it is failing or waits on Syncthing),
    stalled (its heartbeat stopped) or not running. Exit code 0 when Syncthing answers, 1
    when it does not (the output says why).

    Example: twinsync status --json
    """
    with open_node(home, timeout=INTERACTIVE_TIMEOUT) as node:
        st = node_status(node)
        metrics = node_metrics(node)
    if as_json:
        print_json({**st.to_dict(), "metrics": metrics.summary()})
    else:
        from rich.console import Console  # for people only: scripts' --json never loads rich
        from rich.markup import escape
        from rich.table import Table

        console = Console()
        console.print(f"[bold]{st.node}[/]  {st.device_id}")
        console.print(f"home       {st.home}")
        if st.syncthing_ok:
            console.print(f"syncthing  {st.syncthing_url} ({st.syncthing_version})")
        else:
            console.print(f"syncthing  [red]{st.syncthing_error}[/]")
        colour = {RUNNING: "green", DEGRADED: "yellow", NOT_RUNNING: "yellow"}.get(st.daemon.state, "red")
        console.print(f"daemon     [{colour}]{st.daemon.state}[/]: {st.daemon.message}", highlight=False)
        colour = {REACHABLE: "green", NOT_CONFIGURED: "dim"}.get(st.mqtt.state, "red")
        console.print(f"mqtt       [{colour}]{st.mqtt.state}[/]: {escape(st.mqtt.message)}", highlight=False)
        console.print(f"link       {_link_line(st.link)}", highlight=False)
        console.print(f"metrics    {_metrics_line(metrics)}", highlight=False)
        folders = Table("folder", "type", "state", "complete", "shared with")
        for f in st.folders:
            done = "-" if f.completion is None else f"{f.completion:.0f}%"
            folders.add_row(f.id, f.type, f.state or "-", done, ", ".join(f.shared_with) or "-")
        if st.folders:
            console.print(folders)
        for p in st.peers:
            mark = {True: "[green]connected[/]", False: "[red]not connected[/]", None: "unknown"}[p.connected]
            console.print(f"peer {p.name:<16} {mark}  last seen {p.last_seen or 'never'}")
    if not st.syncthing_ok:
        raise typer.Exit(1)


def _link_line(link: dict) -> str:
    """Where the peer link listens, and whether the daemon serves it now."""
    if not link.get("listen"):
        return "[dim]off[/] ([link] listen is empty; `twinsync ask` then only asks from this process)"
    if link.get("port") is None:
        return f"{link['listen']}, served while `twinsync run` runs (not now)"
    return f"[green]serving[/] on port {link['port']} ({link['listen']})"


def _metrics_line(metrics: Metrics) -> str:
    """The seed metrics in their one unit each, green or red against the seed threshold, or
    'not enough data yet' while too little is measured (as the TUI's Metrics tab says)."""
    if all(metrics.verdict(name) is None for name in METRIC_NAMES):
        return f"[bright_black]{NOT_ENOUGH_DATA}[/] (the metrics fill in as the nodes work)"
    cells = []
    for name in METRIC_NAMES:
        verdict = metrics.verdict(name)
        if verdict is None:
            value = f"[bright_black]{NOT_ENOUGH_DATA}[/]"
        else:
            value = f"[{'green' if verdict else 'red'}]{format_metric(name, getattr(metrics, name))}[/] ({threshold_text(name)})"
        cells.append(f"{METRIC_WORDS[name]} {value}")
    return " · ".join(cells)


def doctor(home: HomeOption, as_json: JsonOption = False) -> None:
    """Check everything this node needs, one line each: ok / warn / fail and the fix.

    Exit code 1 when any check fails.

    Example: twinsync doctor
    """
    from orchestrator.doctor import FAIL, OK, Check, check_programs, run_checks  # `status` never needs it
    try:
        with open_node(home, timeout=INTERACTIVE_TIMEOUT) as node:
            checks = run_checks(node)
    except NoNodeError as exc:  # before `init`: the fix is init, not repairing a file
        message, fix = str(exc).split("; ", 1)
        checks = check_programs(managed=False) + [Check("node home", FAIL, message, fix.rstrip("."))]
    except TwinsyncError as exc:  # a broken node home is one failed check among the others
        checks = check_programs(managed=False) + [Check("node home", FAIL, str(exc).split(";")[0],
                                                        "fix the file it names, or restore it from a backup")]
    except SyncthingError as exc:  # syncthing.url in twinsync.toml is not an address
        checks = check_programs(managed=False) + [Check("Syncthing API", FAIL, str(exc).split(";")[0],
                                                        f"fix syncthing.url in {home / 'twinsync.toml'}")]
    if as_json:
        print_json([c.to_dict() for c in checks])
    else:
        from rich.console import Console  # for people only: scripts' --json never loads rich
        from rich.markup import escape

        console = Console(highlight=False, soft_wrap=True)
        colour = {OK: "green", FAIL: "red"}
        for c in checks:
            fix = f"  → {c.fix}" if c.fix and c.level != OK else ""
            console.print(f"[{colour.get(c.level, 'yellow')}]{c.level:<4}[/] {escape(f'{c.name}: {c.message}{fix}')}")
    if any(c.level == FAIL for c in checks):
        raise typer.Exit(1)
