"""`twinsync ask`: a goal → the network's conclusion, over the peer link."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from orchestrator import ask as service
from orchestrator.cli import complete
from orchestrator.cli.common import HomeOption, JsonOption, open_node, print_json
from orchestrator.node import INTERACTIVE_TIMEOUT

#: Exit code when no node answered with a fresh conclusion (the local replica's, if any, is shown).
EXIT_NO_FRESH_ANSWER = 3


def ask(goal: Annotated[str, typer.Argument(help="The goal or question, exactly as sessions name it.")],
        home: HomeOption, json_: JsonOption = False,
        node: Annotated[Optional[str], typer.Option(
            "--node", help="Ask this peer only, by node name (no local answer, no routing).",
            autocompletion=complete.peer_names)] = None,
        timeout: Annotated[Optional[float], typer.Option(
            help="Seconds for the whole question (default: [link] timeout_ms, 2 s).", min=0.01)] = None,
        no_reason: Annotated[bool, typer.Option(
            "--no-reason", help="A peer with no conclusion says so instead of running its reasoner.")] = False) -> None:
    """Ask the network for its conclusion on a goal.

    This node answers itself when it holds a conclusion and merged its peers' steps lately;
    otherwise the question goes over the peer link to the peers nearest by meaning, one
    after another, until one answers or the time is up. Every peer tried is listed.

    Exit codes: 0 a fresh conclusion; 3 none (what this node's own replica holds is shown,
    marked stale); 1 an error (an empty goal, an unknown --node).

    Examples:
      twinsync ask "plan the week"
      twinsync ask "когда поливать томаты" --node kitchen --json
    """
    with open_node(home, timeout=INTERACTIVE_TIMEOUT) as opened:
        answer = service.ask_network(opened, goal, peer=node, timeout=timeout, reason=not no_reason)
    if json_:
        print_json(answer.to_dict())
    else:
        typer.echo(service.describe(answer))
    if not answer.fresh:
        raise typer.Exit(EXIT_NO_FRESH_ANSWER)
