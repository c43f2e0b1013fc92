"""`twinsync pause`, `resume`, `rescan`, `unpair`, `watch`."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from typing import Annotated, Optional

import typer

from folders.alerts import Alert
from folders.trace import format_ts, utc_now
from orchestrator import alerts, controls
from orchestrator.cli import complete
from orchestrator.cli.common import HomeOption, JsonOption, open_node, print_json

PeerArgument = Annotated[Optional[str], typer.Argument(
    help="A peer's node name (or its Syncthing device ID).", show_default=False,
    autocompletion=complete.peer_names)]
FolderOption = Annotated[Optional[str], typer.Option(
    "--folder", help="A twinsync folder instead of a peer: frames, recovery-NODE (or its full Syncthing ID).")]


def pause(home: HomeOption, peer: PeerArgument = None, folder: FolderOption = None) -> None:
    """Pause a peer (nothing is exchanged with it) or one twinsync folder (with every peer).

    It stays paused, across restarts, until `twinsync resume`.

    Example: twinsync pause desktop        twinsync pause --folder frames
    """
    with open_node(home) as node:
        typer.echo(controls.set_paused(node, peer=peer, folder=folder, paused=True))


def resume(home: HomeOption, peer: PeerArgument = None, folder: FolderOption = None) -> None:
    """Resume a paused peer or twinsync folder.

    Example: twinsync resume desktop        twinsync resume --folder frames
    """
    with open_node(home) as node:
        typer.echo(controls.set_paused(node, peer=peer, folder=folder, paused=False))


def rescan(home: HomeOption, folder: FolderOption = None) -> None:
    """Ask Syncthing to scan twinsync's folders now (or one, with --folder), as its GUI's
    "Rescan" does, instead of waiting for its watcher or its hourly scan.

    Example: twinsync rescan --folder frames
    """
    with open_node(home) as node:
        ids = controls.rescan(node, folder)
    typer.echo(f"Syncthing is scanning {', '.join(ids)}." if ids else "No twinsync folder to scan (all paused?).")


def unpair(
    peer: Annotated[str, typer.Argument(help="The peer's node name (or its Syncthing device ID).", autocompletion=complete.peer_names)],
    home: HomeOption,
    keep_recovery: Annotated[bool, typer.Option(
        "--keep-recovery/--remove-recovery",
        help="Keep the peer's recovery folder (moved to unpaired/ in the node home) or delete it.")] = True,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Stop trusting a peer: its device and its shares of twinsync's folders leave this
    Syncthing, its trust entry leaves trusted.toml, its recovery folder is kept aside or
    removed. Steps already merged stay. The peer sees this node disconnect; run `unpair`
    there too.

    Example: twinsync unpair desktop --remove-recovery --yes
    """
    with open_node(home) as node:
        target = controls.find_peer(node, peer)
        if not yes:
            try:
                typer.confirm(f"Unpair {target.name} ({target.device_id[:7]}) and "
                              f"{'keep' if keep_recovery else 'DELETE'} its recovery folder?", abort=True)
            except typer.Abort:
                typer.echo("Nothing changed (pass --yes to skip this question).", err=True)
                raise typer.Exit(1) from None
        report = controls.unpair(node, target.name, keep_recovery=keep_recovery)
    if as_json:
        print_json(asdict(report))
    else:
        typer.echo(controls.unpair_summary(report))


def watch(
    home: HomeOption,
    as_json: JsonOption = False,
    interval: Annotated[float, typer.Option("--interval", min=0.2, help="Seconds between looks.")] = 5.0,
) -> None:
    """Print alerts as they happen, for a terminal or a log: what holds now first, then
    each alert once when it is raised, and when it clears. Ctrl-C stops (exit 0).

    Alerts: a new conflict, fork or other queue item; a peer disconnected longer than
    [alerts] peer_disconnected_after_s; a stale fingerprint (off unless [alerts]
    fingerprints = true); a refused piece of a peer's trace; the daemon or Syncthing
    unhealthy. It works whether the daemon runs or not.

    Example: twinsync watch --json >> ~/twinsync-alerts.log
    """
    def emit(state: str, alert: Alert) -> None:
        when = format_ts(utc_now())
        if as_json:
            typer.echo(json.dumps({"time": when, "state": state, **alert.to_dict()}, sort_keys=True))
        else:
            mark = "!" if state == "raised" else "ok"
            typer.echo(f"{when[:19]}Z {mark:<2} {alert.kind} {alert.subject}: "
                       f"{alert.sentence if state == 'raised' else 'cleared: ' + alert.sentence}")

    stop = threading.Event()
    try:
        with open_node(home) as node:
            alerts.watch(node, emit, stop, interval_s=interval,
                         on_problem=lambda problem: typer.echo(f"watch: cannot look now ({problem}); "
                                                               "trying again", err=True))
    except KeyboardInterrupt:
        stop.set()
