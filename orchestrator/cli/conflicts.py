"""`twinsync conflicts`, `conflict show`, `approve`, `reject`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from folders.errors import echo
from orchestrator import frames
from orchestrator.cli.common import HomeOption, JsonOption, open_node, print_json
from orchestrator.conflicts import DIFF_KINDS, ConflictError

conflict_app = typer.Typer(help="Look at one item of the conflict queue.", no_args_is_help=True)

Ids = Annotated[Optional[list[int]], typer.Argument(help="Item ids from `twinsync conflicts`.")]
FromDevice = Annotated[Optional[str], typer.Option("--all-from", help="Every open conflict whose copy came from this device (ID or its first 7 characters).")]
Namespace = Annotated[Optional[str], typer.Option("--namespace", help="Every open conflict on frames in this namespace.")]

#: Queue ids are SQLite integers; a larger number cannot name an item (and SQLite cannot bind it).
_MAX_ID = 2**63 - 1


def _checked_ids(ids: list[int]) -> list[int]:
    """Refuse an id no queue item can have before it reaches SQLite (which overflows on it)."""
    for item_id in ids:
        if not 0 < item_id <= _MAX_ID:
            raise ConflictError(f"There is no conflict #{echo(item_id)}; ids are positive whole numbers "
                                "listed by `twinsync conflicts --all`.")
    return ids


def conflicts(home: HomeOption, as_json: JsonOption = False,
              all_: Annotated[bool, typer.Option("--all", help="Include decided and closed items.")] = False) -> None:
    """List the queue: frame conflicts, invalid files, rollbacks and quarantined files, newest first.

    Example: twinsync conflicts --json
    """
    with open_node(home) as node:
        items = frames.list_conflicts(node, include_closed=all_)
    if as_json:
        print_json([asdict(i) for i in items])
        return
    if not items:
        typer.echo("The conflict queue is empty.")
        return
    table = Table("id", "kind", "frame", "from", "status", "what")
    for i in items:
        table.add_row(str(i.id), i.kind, i.frame or i.path, i.device or "-", i.status, i.summary())
    Console().print(table)
    typer.echo("Details: `twinsync conflict show ID`; decide with `twinsync approve ID` / `twinsync reject ID`.")


@conflict_app.command()
def show(item_id: Annotated[int, typer.Argument(help="Item id.")], home: HomeOption,
         as_json: JsonOption = False) -> None:
    """Show one item and the unified diff of the two versions' bodies.

    Example: twinsync conflict show 3
    """
    with open_node(home) as node:
        item = frames.get_conflict(node, _checked_ids([item_id])[0])
        diff = frames.conflict_diff(node, item)
    if as_json:
        print_json({**asdict(item), "diff": diff})
        return
    typer.echo(f"#{item.id} {item.kind} on {item.frame or item.path} — {item.status}: {item.summary()}")
    if item.branch:
        typer.echo(f"fork branch: {item.branch}")
    consequences = item.consequences()
    if consequences and item.status == "open":
        typer.echo(f"approve: {consequences[0]}")
        typer.echo(f"reject: {consequences[1]}")
    elif item.kind == "invalid":
        typer.echo("It closes by itself once the file is fixed or deleted on any node.")
    Console().print(Syntax(diff, "diff", theme="ansi_dark") if item.kind in DIFF_KINDS else diff)


def _decide(home, ids, device, namespace, approve: bool) -> None:
    if not ids and not device and not namespace:
        raise typer.BadParameter("give item ids, --all-from DEVICE or --namespace NS.")
    with open_node(home) as node:
        items = frames.select_conflicts(node, _checked_ids(ids or []), device=device, namespace=namespace)
        if not items:
            typer.echo("No open conflict matches.")
            return
        for item in frames.decide(node, items, approve=approve):
            typer.echo(f"#{item.id} {item.frame}: {item.status}")


def approve(home: HomeOption, ids: Ids = None, all_from: FromDevice = None, namespace: Namespace = None) -> None:
    """Make the other version the frame on every node; the conflict copy is removed.

    On a rollback: keep the older version (commit it). On a quarantined file: keep the file
    in quarantine and close the item.

    Undo with `twinsync frame restore ID --to REV` (see `frame log`).

    Example: twinsync approve 3    or    twinsync approve --all-from ABCDEFG
    """
    _decide(home, ids, all_from, namespace, approve=True)


def reject(home: HomeOption, ids: Ids = None, all_from: FromDevice = None, namespace: Namespace = None) -> None:
    """Keep the current version; the copy is removed and its fork branch kept in Git.

    On a rollback: write the newer version back. On a quarantined file: delete it.

    Undo with `twinsync frame restore ID --to fork/...` (the branch is in `conflict show`).

    Example: twinsync reject 3    or    twinsync reject --namespace scratch
    """
    _decide(home, ids, all_from, namespace, approve=False)
