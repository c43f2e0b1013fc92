"""`twinsync syncthing start|stop`: the managed Syncthing of `init --managed`."""

from __future__ import annotations

import typer
from rich.console import Console

from folders.errors import HomeError
from folders.layout import NodeLayout
from orchestrator.cli.common import HomeOption
from orchestrator.config import load_config
from syncthing.process import ManagedSyncthing

app = typer.Typer(help="Start or stop the Syncthing that `twinsync init --managed` set up.",
                  no_args_is_help=True)


def _managed(home) -> ManagedSyncthing:
    layout = NodeLayout(home)
    if not load_config(layout).managed:
        raise HomeError(f"The node in {home} uses a Syncthing it does not manage; start or stop "
                        "that Syncthing the usual way (e.g. `systemctl --user start syncthing`).")
    return ManagedSyncthing(layout.syncthing_home)


@app.command()
def start(home: HomeOption) -> None:
    """Start the managed Syncthing in the background.

    Example: twinsync syncthing start
    """
    managed = _managed(home)
    running = managed.running_pid()
    if running:
        typer.echo(f"Syncthing is already running (pid {running}).")
        return
    with Console(stderr=True).status("Starting Syncthing…") as shown:
        pid = managed.start(detach=True, on_busy=lambda message: shown.update(message))
    typer.echo(f"Syncthing started (pid {pid}).")


@app.command()
def stop(home: HomeOption) -> None:
    """Stop the managed Syncthing (SIGTERM, then SIGKILL after 10 s).

    Example: twinsync syncthing stop
    """
    managed = _managed(home)
    if managed.running_pid() is None:
        typer.echo("Syncthing was not running.")
        return
    with Console(stderr=True).status("Stopping Syncthing…"):
        managed.stop()
    typer.echo("Syncthing stopped.")
