"""`twinsync trace ...`, `forks`, `fork approve|reject`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from folders.decisions import PAST
from orchestrator import traces
from orchestrator.cli import complete, recovery
from orchestrator.cli import modules as module_commands
from orchestrator.cli.common import HomeOption, JsonOption, id_column, open_node, print_json

app = typer.Typer(help="Record reasoning (sessions of steps toward a goal) and read it back.",
                  no_args_is_help=True)
fork_app = typer.Typer(help="Rule on a forked reasoning session.", no_args_is_help=True)

Session = Annotated[str, typer.Argument(help="Session id from `trace start` or `trace query` (a unique beginning is enough).")]


@app.command()
def start(goal: Annotated[str, typer.Argument(help="What the session reasons toward.")], home: HomeOption,
          content: Annotated[Optional[str], typer.Option(help="Text of the first step (default: the goal).")] = None) -> None:
    """Start a session toward a goal; prints its id.

    Example: twinsync trace start "plan the week"
    """
    with open_node(home) as node:
        typer.echo(traces.start(node, goal, content))


@app.command()
def add(session: Session,
        kind: Annotated[str, typer.Argument(help="observation, inference, hypothesis, question, action, decision or conclusion.")],
        content: Annotated[str, typer.Argument(help="The step's text.")], home: HomeOption,
        parent: Annotated[Optional[str], typer.Option(help="Step to follow (default: the session's last).")] = None) -> None:
    """Append a step to an open session; prints the step's hash.

    Example: twinsync trace add 3f2a... observation "Monday is full"
    """
    with open_node(home) as node:
        typer.echo(traces.add(node, session, kind, content, parent))


@app.command()
def finish(session: Session, conclusion: Annotated[str, typer.Argument(help="The conclusion reached.")],
           home: HomeOption) -> None:
    """End a session with its conclusion; it is published at the next publish if coherent.

    Example: twinsync trace finish 3f2a... "move the gym to Tuesday"
    """
    with open_node(home) as node:
        typer.echo(traces.finish(node, session, conclusion))


@app.command("continue")
def continue_(session: Session, home: HomeOption) -> None:
    """Reopen one of this node's sessions to go on reasoning from its last step.

    Example: twinsync trace continue 3f2a...
    """
    with open_node(home) as node:
        traces.reopen(node, session)
    typer.echo(f"Session {session} is open again.")


@app.command()
def show(session: Session, home: HomeOption, as_json: JsonOption = False) -> None:
    """Show a session's steps and whether it passes COHERENCE-CHECK.

    Example: twinsync trace show 3f2a... --json
    """
    with open_node(home) as node:
        view = traces.show(node, session)
    if as_json:
        print_json({"session": view.session, "steps": [asdict(s) for s in view.steps],
                    "problems": [asdict(p) for p in view.problems]})
        return
    for s in view.steps:
        typer.echo(f"{s.ts[:19]}  {s.author:<10} {s.kind:<12} {s.content}")
    for p in view.problems:
        typer.echo(f"not coherent ({p.code}): {p.message}")
    if not view.problems:
        typer.echo("coherent: passes COHERENCE-CHECK")


@app.command()
def goals(home: HomeOption, as_json: JsonOption = False) -> None:
    """List goals with their number of sessions (routes) and steps.

    Example: twinsync trace goals
    """
    with open_node(home) as node:
        found = traces.goals(node)
    if as_json:
        print_json([g._asdict() for g in found])
        return
    table = Table("goal", "routes", "steps")
    for g in found:
        table.add_row(g.goal, str(g.sessions), str(g.steps))
    Console().print(table)


@app.command()
def query(goal: Annotated[str, typer.Argument(help="The goal, exactly as recorded.")], home: HomeOption,
          as_json: JsonOption = False) -> None:
    """Every route toward a goal and the consensus conclusion across all nodes.

    Example: twinsync trace query "plan the week" --json
    """
    with open_node(home) as node:
        result = traces.query(node, goal)
    if as_json:
        print_json({"goal": result.goal, "sessions": [s._asdict() for s in result.sessions],
                    "consensus": asdict(result.consensus), "elapsed_ms": round(result.elapsed_ms, 2)})
        return
    table = Table(id_column("session", [s.session[:12] for s in result.sessions]), "author", "started", "steps",
                  "status", "conclusion")
    for s in result.sessions:  # 12 characters: every command that takes a session takes a unique beginning
        table.add_row(s.session[:12], s.author, s.started[:19], str(s.steps), s.status, s.conclusion or "-")
    Console().print(table)
    c = result.consensus
    typer.echo(f"consensus: {c.conclusion!r} ({c.supporters} of {c.routes} routes) in {result.elapsed_ms:.1f} ms")


def forks(home: HomeOption, as_json: JsonOption = False) -> None:
    """List forked sessions: the branch trace-consensus picks, any decision, and what applies.

    Example: twinsync forks --json
    """
    with open_node(home) as node:
        views = traces.forks(node)
    if as_json:
        print_json([asdict(v) for v in views])
        return
    if not views:
        typer.echo("No forks.")
        return
    table = Table(id_column("fork", [v.id for v in views]), "goal", "branches", "consensus", "decision", "chosen")
    for v in views:
        decided = f"{PAST[v.decision.verdict]} on {v.decision.author}" if v.decision else "-"
        table.add_row(v.id, v.goal, " ".join(b[7:19] for b in v.branches), v.consensus_branch[7:19],
                      decided, v.chosen[7:19])
    Console().print(table)


def _decide(home, fork: str, branch: str, verdict: str) -> None:
    with open_node(home) as node:
        view = traces.decide_fork(node, fork, branch, verdict)
    typer.echo(f"fork {view.id}: {verdict} recorded; branch {view.chosen[7:19]} applies "
               "(every node applies it once the decision is published and merged).")


ForkId = Annotated[str, typer.Argument(help="Fork id from `twinsync forks` (a unique beginning is enough).", autocompletion=complete.fork_ids)]
Branch = Annotated[str, typer.Argument(help="Branch: the first characters of its first step's hash.")]


@fork_app.command()
def approve(fork: ForkId, branch: Branch, home: HomeOption) -> None:
    """Choose this branch for the fork, on every node.

    Example: twinsync fork approve 1a2b3c4d5e6f 9f8e7d6c
    """
    _decide(home, fork, branch, "approve")


@fork_app.command()
def reject(fork: ForkId, branch: Branch, home: HomeOption) -> None:
    """Rule this branch out of the fork, on every node.

    Example: twinsync fork reject 1a2b3c4d5e6f 9f8e7d6c
    """
    _decide(home, fork, branch, "reject")


# `trace publish` and `trace merge` live with the other recovery commands, `trace reason`
# with the module commands (it runs the configured reasoner or an approved module).
app.command()(recovery.publish)
app.command()(recovery.merge)
app.command()(module_commands.reason)
