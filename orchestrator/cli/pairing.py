"""`twinsync invite`, `pair`, `peers`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from orchestrator.cli.common import HomeOption, JsonOption, open_node, print_json
from orchestrator.node import INTERACTIVE_TIMEOUT
from orchestrator.pairing import make_invite, pair as pair_with, peer_statuses


def invite(home: HomeOption) -> None:
    """Print this node's invite code: one line to paste into `twinsync pair` on another node.

    It carries the node name, Syncthing device ID, listen addresses and signing public key
    (no secrets) plus a checksum.

    Example: twinsync invite
    """
    with open_node(home) as node:
        typer.echo(make_invite(node).encode())


def pair(
    code: Annotated[str, typer.Argument(help="The line printed by `twinsync invite` on the other node.")],
    home: HomeOption,
) -> None:
    """Trust another node and share the twinsync folders with it.

    Do it on both nodes, each with the other's code; then they sync.

    Example: twinsync pair twinsync1.eyJhZGRy...f3a9c2d41b7e0c55
    """
    with open_node(home) as node:
        peer = pair_with(node, code)
    typer.echo(f"Paired with {peer.name} ({peer.device_id[:7]}). Run `twinsync pair` with this "
               f"node's invite on {peer.name} too, if not done yet.")


def peers(home: HomeOption, as_json: JsonOption = False) -> None:
    """List trusted peers with whether Syncthing is connected to them and when it last saw them.

    Exit code 1 when Syncthing cannot say (the trusted peers are still listed, and why).

    Example: twinsync peers --json
    """
    with open_node(home, timeout=INTERACTIVE_TIMEOUT) as node:
        statuses, problem = peer_statuses(node)
    if as_json:
        print_json([asdict(p) for p in statuses])
    elif not statuses:
        typer.echo("No peers yet: pair with `twinsync pair CODE`.")
    else:
        table = Table("peer", "device", "connected", "address", "last seen")
        for p in statuses:
            connected = {True: "[green]yes[/]", False: "[red]no[/]", None: "unknown"}[p.connected]
            table.add_row(p.name, p.device_id[:7], connected, p.address or "-", p.last_seen or "never")
        Console().print(table)
    if problem is not None:
        typer.echo(f"Error: connections are unknown. {problem}", err=True)
        raise typer.Exit(1)
