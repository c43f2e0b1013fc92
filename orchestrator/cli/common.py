"""What every command shares: the --home option, JSON output, opening the node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import platformdirs
import typer

from orchestrator.node import Node

if TYPE_CHECKING:
    from rich.progress import Progress
    from rich.table import Column


def default_home() -> Path:
    return platformdirs.user_data_path("twinsync")


HomeOption = Annotated[Path, typer.Option(
    "--home", envvar="TWINSYNC_HOME", default_factory=default_home, show_default="per-user data dir",
    help="Node home directory (also $TWINSYNC_HOME).", file_okay=False, resolve_path=True)]

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")]


def open_node(home: Path, *, timeout: float | None = None) -> Node:
    """The node, its client telling the user on stderr what twinsync fixed by itself; pass
    `timeout=INTERACTIVE_TIMEOUT` where a quick answer matters more than a patient one."""
    return Node.open(home, timeout=timeout, on_notice=lambda message: typer.echo(message, err=True))


def id_column(header: str, ids: list[str]) -> Column:
    """A table column of ids a command takes back: never shrunk or cut with "…" on a narrow
    terminal (the other columns wrap instead)."""
    from rich.table import Column  # tables are for people; `--json` calls never load rich

    return Column(header, no_wrap=True, min_width=max((len(i) for i in ids), default=len(header)))


def print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True))


def progress_bar(*, off: bool = False) -> Progress:
    """A transient progress bar on stderr, shown only on a terminal: on a pipe, a transient
    bar still writes a newline when it stops, which then comes before the error sentence
    (or the summary) a script reads."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    return Progress(console=console, transient=True, disable=off or not console.is_terminal)
