"""`twinsync topology show|apply`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from folders.errors import TwinsyncError, echo
from orchestrator.cli.common import HomeOption, JsonOption, open_node, print_json
from orchestrator.topology import apply_topology, show_topology
from syncthing.topology import KINDS, Topology

app = typer.Typer(help="The seed's execution models as Syncthing sharing: swarm, star, sharded, p2p.",
                  no_args_is_help=True)


@app.command()
def show(home: HomeOption, as_json: JsonOption = False) -> None:
    """Show the topology this node applied and how its twinsync folders are shared.

    Example: twinsync topology show --json
    """
    with open_node(home) as node:
        view = show_topology(node)
    if as_json:
        print_json(view.to_dict())
        return
    t = view.topology
    typer.echo(f"topology: {t.kind}" + (f" (master {t.master})" if t.master else ""))
    for ns, nodes in sorted(t.namespaces.items()):
        typer.echo(f"  namespace {ns}: {', '.join(sorted(nodes))}")
    table = Table("folder", "type", "shared with")
    for f in view.folders:
        table.add_row(f["id"], f["type"], ", ".join(f["shared_with"]) or "-")
    Console().print(table)


def _pairs(values: list[str], option: str) -> dict[str, list[str]]:
    out = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            raise TwinsyncError(f"{option} {echo(value)} must look like NAME=A,B.")
        out[key] = [v for v in rest.split(",") if v]
    return out


@app.command()
def apply(
    kind: Annotated[str, typer.Argument(help=f"One of {', '.join(KINDS)}.")],
    home: HomeOption,
    master: Annotated[Optional[str], typer.Option(help="star: the node every agent shares with.")] = None,
    map_: Annotated[Optional[list[str]], typer.Option("--map", help="sharded: NS=NODE,NODE (repeat per namespace).")] = None,
    interest: Annotated[Optional[list[str]], typer.Option(help="p2p: NODE=NS,NS (repeat per node).")] = None,
) -> None:
    """Apply a topology to this node's Syncthing (run the same command on every node).

    Idempotent; touches only twinsync's folders and devices.

    Example: twinsync topology apply sharded --map secret=laptop,desktop
    """
    namespaces: dict[str, frozenset[str]] = {}
    if kind == "sharded":
        namespaces = {ns: frozenset(nodes) for ns, nodes in _pairs(map_ or [], "--map").items()}
    elif kind == "p2p":
        by_ns: dict[str, set[str]] = {}
        for node_name, nss in _pairs(interest or [], "--interest").items():
            for ns in nss:
                by_ns.setdefault(ns, set()).add(node_name)
        namespaces = {ns: frozenset(nodes) for ns, nodes in by_ns.items()}
    with open_node(home) as node:
        applied = apply_topology(node, Topology(kind, master, namespaces))
    typer.echo(f"{kind} applied: {len(applied.folders)} folder(s) configured"
               + (f", {len(applied.remove)} removed" if applied.remove else ""))
