"""`twinsync init`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from orchestrator.cli.common import HomeOption, JsonOption, print_json
from orchestrator.config import LinkSettings
from orchestrator.init import SyncthingTarget, init_node


def init(
    name: Annotated[str, typer.Option("--name", help="This node's name: letters, digits, - or _.")],
    home: HomeOption,
    syncthing_url: Annotated[str | None, typer.Option(help="Syncthing's API address, e.g. http://127.0.0.1:8384.")] = None,
    api_key: Annotated[str | None, typer.Option(help="Syncthing's API key (from its GUI settings).")] = None,
    managed: Annotated[bool, typer.Option("--managed", help="Run a private, loopback-only Syncthing for this node.")] = False,
    link: Annotated[str, typer.Option(
        "--link", help="Where the daemon serves the peer link that `twinsync ask` uses: host:port "
                       "(0 as the port picks a free one), or off.")] = LinkSettings.listen,
    as_json: JsonOption = False,
) -> None:
    """Create a node home and its Syncthing folders.

    With no Syncthing flags, twinsync finds the running Syncthing's config.xml and reads its
    address and API key. Nothing is left behind if anything fails.

    Example: twinsync init --name laptop
    """
    if managed and (syncthing_url or api_key):
        raise typer.BadParameter("--managed runs its own Syncthing; leave out --syncthing-url and --api-key.")
    with Console(stderr=True).status("Setting up the node home and its Syncthing folders…"):
        result = init_node(home, name, SyncthingTarget(syncthing_url, api_key, managed),
                           link="" if link == "off" else link)
    if as_json:
        print_json({"home": str(result.home), "name": result.name, "device_id": result.device_id,
                    "syncthing_url": result.syncthing_url, "managed": result.managed,
                    "syncthing_pid": result.syncthing_pid, "link": result.link,
                    "config_path": None if result.config_path is None else str(result.config_path)})
        return
    typer.echo(f"Node {result.name} is ready in {result.home}")
    typer.echo(f"  Syncthing device ID: {result.device_id}")
    config = "given as flags" if result.config_path is None else f"config {result.config_path}"
    typer.echo(f"  Syncthing: {result.syncthing_url} ({config})")
    typer.echo(f"  Peer link: {result.link or 'off'} (served while `twinsync run` runs)")
    if result.managed:
        typer.echo(f"  Managed Syncthing running (pid {result.syncthing_pid}) at {result.syncthing_url}")
    typer.echo("Next: run `twinsync invite` here and `twinsync pair CODE` on the other machine (and vice versa).")
