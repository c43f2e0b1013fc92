"""The `twinsync` command: thin commands over the service functions in orchestrator/.

Our own errors become `Error: <sentence>` and exit 1 (no traceback); anything unexpected
writes a crash report to the user log directory and says where, exit 70.
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys

import click
import typer
from typer.core import TyperGroup

from folders.errors import TwinsyncError
from orchestrator.cli import (conflicts, demo, frames, init, modules, pairing, recovery, run, status,
                              syncthing, topology, traces, tui)
from orchestrator.crash import EXIT_CRASH, crash_message, write_crash_report
from syncthing.errors import SyncthingError

#: Exit codes of every command; install/twinsync@.service does not restart the daemon on
#: a user error (nor a usage error, 2), which only a person can fix.
EXIT_USER_ERROR = 1


class _UserErrors(TyperGroup):
    """Turns the errors a user can fix into one `Error: ...` line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (TwinsyncError, SyncthingError) as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None


app = typer.Typer(
    cls=_UserErrors,
    name="twinsync",
    help="twinsync keeps a small network of home machines thinking as one: frames and traces "
         "replicated by Syncthing, versioned in Git, merged in SQLite.\n\n"
         "Start with `twinsync init --name NAME`, then `twinsync invite` / `twinsync pair CODE`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"twinsync {importlib.metadata.version('twinsync')}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """twinsync: signed frames and reasoning traces across home machines."""


app.command()(init.init)
app.command()(pairing.invite)
app.command()(pairing.pair)
app.command()(pairing.peers)
app.command()(status.status)
app.command()(status.doctor)
app.command()(run.run)
app.add_typer(frames.app, name="frame")
app.command()(conflicts.conflicts)
app.add_typer(conflicts.conflict_app, name="conflict")
app.command()(conflicts.approve)
app.command()(conflicts.reject)
traces.app.command()(recovery.publish)
traces.app.command()(recovery.merge)
traces.app.command()(modules.reason)
app.add_typer(traces.app, name="trace")
app.command()(traces.forks)
app.add_typer(traces.fork_app, name="fork")
app.command()(recovery.nodes)
app.command()(recovery.snapshots)
app.command()(recovery.restore)
app.command("modules")(modules.modules_list)
app.add_typer(modules.app, name="module")
app.add_typer(topology.app, name="topology")
app.command()(tui.tui)
app.command()(demo.demo)
app.add_typer(syncthing.app, name="syncthing")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except Exception as exc:  # noqa: BLE001 - last resort: no traceback on the user's screen
        typer.echo(crash_message("twinsync", exc, write_crash_report(exc)), err=True)
        sys.exit(EXIT_CRASH)
