"""The `twinsync` command's Typer app: thin commands over the service functions in
orchestrator/. Our own errors become `Error: <sentence>` and exit 1 (no traceback)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import typer
from typer.core import TyperGroup
from typer.main import get_command_from_info, get_group_from_info
from typer.models import CommandInfo, TyperInfo

from folders.errors import TwinsyncError
from orchestrator import __version__
from orchestrator.cli import EXIT_USER_ERROR
from syncthing.errors import SyncthingError

if TYPE_CHECKING:  # only for annotations: typer >= 0.26 carries its own copy of click
    import click

#: Every command, in the order `--help` lists them: name → "module:attribute" (a function, or
#: a Typer for a command group). A command's module is imported only when that command runs
#: (or `--help` lists it), so `twinsync --version` or `status` never pays for Git, the
#: scheduler or Textual (tests/unit/test_cli_imports.py holds that).
COMMANDS = {
    "init": "orchestrator.cli.init:init",
    "invite": "orchestrator.cli.pairing:invite",
    "pair": "orchestrator.cli.pairing:pair",
    "peers": "orchestrator.cli.pairing:peers",
    "unpair": "orchestrator.cli.controls:unpair",
    "pause": "orchestrator.cli.controls:pause",
    "resume": "orchestrator.cli.controls:resume",
    "rescan": "orchestrator.cli.controls:rescan",
    "watch": "orchestrator.cli.controls:watch",
    "status": "orchestrator.cli.status:status",
    "doctor": "orchestrator.cli.status:doctor",
    "run": "orchestrator.cli.run:run",
    "conflicts": "orchestrator.cli.conflicts:conflicts",
    "approve": "orchestrator.cli.conflicts:approve",
    "reject": "orchestrator.cli.conflicts:reject",
    "forks": "orchestrator.cli.traces:forks",
    "nodes": "orchestrator.cli.recovery:nodes",
    "snapshots": "orchestrator.cli.recovery:snapshots",
    "restore": "orchestrator.cli.recovery:restore",
    "ask": "orchestrator.cli.ask:ask",
    "modules": "orchestrator.cli.modules:modules_list",
    "module": "orchestrator.cli.modules:app",
    "tui": "orchestrator.cli.tui:tui",
    "demo": "orchestrator.cli.demo:demo",
    "frame": "orchestrator.cli.frames:app",
    "conflict": "orchestrator.cli.conflicts:conflict_app",
    "trace": "orchestrator.cli.traces:app",
    "fork": "orchestrator.cli.traces:fork_app",
    "topology": "orchestrator.cli.topology:app",
    "syncthing": "orchestrator.cli.syncthing:app",
}


class _UserErrors(TyperGroup):
    """Loads each command from `COMMANDS` when it is asked for, and turns the errors a user
    can fix into one `Error: ...` line on stderr and exit code 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *(name for name in super().list_commands(ctx) if name not in COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            self.add_command(_load(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

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
        typer.echo(f"twinsync {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """twinsync: signed frames and reasoning traces across home machines."""


def _load(name: str) -> click.Command:
    """The click command for `name`, built as `app.command()` / `app.add_typer()` would."""
    module, attribute = COMMANDS[name].split(":")
    target = getattr(importlib.import_module(module), attribute)
    if isinstance(target, typer.Typer):
        return get_group_from_info(TyperInfo(target, name=name), pretty_exceptions_short=app.pretty_exceptions_short,
                                   rich_markup_mode=app.rich_markup_mode, suggest_commands=app.suggest_commands)
    return get_command_from_info(CommandInfo(name=name, callback=target), rich_markup_mode=app.rich_markup_mode,
                                 pretty_exceptions_short=app.pretty_exceptions_short)
