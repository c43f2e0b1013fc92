"""`twinsync conflicts`, `conflict show`, `approve`, `reject`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from folders.errors import echo
from orchestrator import frames
from orchestrator.cli import complete
from orchestrator.cli.common import HomeOption, JsonOption, open_node, print_json
from orchestrator.conflicts import DIFF_KINDS, KINDS, VERSION_KINDS, ConflictError, detail_lines

conflict_app = typer.Typer(help="Look at one item of the conflict queue.", no_args_is_help=True)

Ids = Annotated[Optional[list[str]], typer.Argument(help="Item ids (the numbers `twinsync conflicts` lists).", autocompletion=complete.queue_items)]
FromNode = Annotated[Optional[str], typer.Option(
    "--all-from", help="Every open conflict whose set-aside version this node wrote (its name), or whose "
                       "copy Syncthing named after this device (its ID or first 7 characters).")]
Namespace = Annotated[Optional[str], typer.Option("--namespace", help="Every open conflict on frames in this namespace.")]

#: Queue ids are SQLite integers; a larger number cannot name an item (and SQLite cannot bind it).
_MAX_ID = 2**63 - 1


def _checked_ids(ids: list[str]) -> list[int]:
    """Whole numbers a queue item can have, or one sentence: typer's own parse error speaks
    of integers, and SQLite overflows on an id past its range."""
    checked = []
    for text in ids:
        item_id = int(text) if text.strip().isdigit() else 0
        if not 0 < item_id <= _MAX_ID:
            raise ConflictError(f"There is no conflict #{echo(text, quoted=False)}; a queue item is named by its number, "
                                "as `twinsync conflicts --all` lists it (e.g. `twinsync approve 3`).")
        checked.append(item_id)
    return checked


Shows = Annotated[bool, typer.Option("--all", help="Include decided and closed items (history).")]
Decided = Annotated[bool, typer.Option("--decided", help="Only decided and closed items: who decided what, and where.")]


def conflicts(home: HomeOption, as_json: JsonOption = False, all_: Shows = False, decided: Decided = False) -> None:
    """List the open queue: frame conflicts, invalid files, rollbacks and quarantined files, newest first.

    For each item: the version current now and who wrote it, the version set aside and who
    wrote it (node names: the frames' signers). Decided items leave the queue; `--decided`
    shows them with who decided and on which node.

    Example: twinsync conflicts --decided --json
    """
    with open_node(home) as node:
        items = frames.list_conflicts(node, shows="decided" if decided else "all" if all_ else "open")
    if as_json:
        print_json([i.as_json() for i in items])
        return
    if not items:
        typer.echo("No decided items yet." if decided else "The conflict queue is empty.")
        return
    table = Table("id", "kind", "frame", "current version", "set-aside version", "state")
    for i in items:
        table.add_row(str(i.id), i.kind, i.frame or i.path, _version_cell(i.ours_author, i.ours_created, i),
                      _version_cell(i.theirs_author, i.theirs_created, i, current=False),
                      i.status if i.status == "open" else i.decision())
    Console().print(table)
    typer.echo("Details: `twinsync conflict show ID`; decide with `twinsync approve ID` / `twinsync reject ID`.")


def _version_cell(author: str | None, written: str | None, item, *, current: bool = True) -> str:
    if item.kind not in VERSION_KINDS:
        return item.summary() if current else "-"
    if item.kind == "deleted" and current:
        return "deleted"
    return f"by {author or '?'}, {(written or '?')[:16].replace('T', ' ')}"


@conflict_app.command()
def show(item_id: Annotated[str, typer.Argument(help="Item id.", autocompletion=complete.queue_items)], home: HomeOption,
         as_json: JsonOption = False) -> None:
    """Show one item: each version and who wrote it, what approve and reject do on every
    node (or who decided it), and the unified diff of the two versions' bodies.

    Example: twinsync conflict show 3
    """
    with open_node(home) as node:
        item = frames.get_conflict(node, _checked_ids([item_id])[0])
        diff = frames.conflict_diff(node, item)
    if as_json:
        print_json({**item.as_json(), "diff": diff})
        return
    typer.echo(f"#{item.id} {item.kind} on {item.frame or item.path}: {KINDS.get(item.kind, item.kind)}")
    for label, line in detail_lines(item):
        typer.echo(f"{label}: {line}")
    if item.kind == "invalid" and not item.decided:
        typer.echo("It closes by itself once the file is fixed or deleted on any node.")
    Console().print(Syntax(diff, "diff", theme="ansi_dark") if item.kind in DIFF_KINDS else diff)


def _decide(home, ids, author, namespace, approve: bool) -> None:
    if not ids and not author and not namespace:
        raise typer.BadParameter("give item ids, --all-from NODE or --namespace NS.")
    with open_node(home) as node:
        items = frames.select_conflicts(node, _checked_ids(ids or []), author=author, namespace=namespace)
        if not items:
            typer.echo("No open conflict matches.")
            return
        for item in frames.decide(node, items, approve=approve):
            typer.echo(f"#{item.id} {item.frame}: {item.decision()}")


def approve(home: HomeOption, ids: Ids = None, all_from: FromNode = None, namespace: Namespace = None) -> None:
    """Approve: the set-aside version becomes the frame on every node; the conflict copy is removed.

    On a deleted frame: the set-aside version brings it back. On a rollback: the older
    version is committed. On a quarantined file: it stays in quarantine and the item closes.

    Undo with `twinsync frame restore ID --to REV` (see `frame log`).

    Example: twinsync approve 3    or    twinsync approve --all-from laptop
    """
    _decide(home, ids, all_from, namespace, approve=True)


def reject(home: HomeOption, ids: Ids = None, all_from: FromNode = None, namespace: Namespace = None) -> None:
    """Reject: the current version stays the frame on every node; the conflict copy is removed
    and the set-aside version kept in Git on its fork branch.

    On a rollback: the current version is written back. On a quarantined file: it is deleted.

    Undo with `twinsync frame restore ID --to fork/...` (the branch is in `conflict show`).

    Example: twinsync reject 3    or    twinsync reject --namespace scratch
    """
    _decide(home, ids, all_from, namespace, approve=False)
