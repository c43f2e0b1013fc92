"""`twinsync modules`, `module show|approve|reject|publish|log`, `trace reason`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from orchestrator import modules, reasoner
from orchestrator.cli import complete
from orchestrator.cli.common import HomeOption, JsonOption, open_node, print_json

app = typer.Typer(help="Publish a reasoning module, see what changed, approve or reject it on this node.",
                  no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="Module name, as `twinsync modules` lists it.", autocompletion=complete.module_names)]
VersionOption = Annotated[Optional[str], typer.Option("--version", help="A version from `twinsync module log NAME`.")]


def modules_list(home: HomeOption, as_json: JsonOption = False) -> None:
    """List the modules on this node: which version runs, which wait for your approval, which are refused.

    Example: twinsync modules --json
    """
    with open_node(home) as node:
        summaries = modules.list_modules(node)
    if as_json:
        print_json([s.to_dict() for s in summaries])
        return
    if not summaries:
        typer.echo("No modules yet. Publish one with `twinsync module publish DIR --version 1.0 --entry main.py`.")
        return
    table = Table("module", "state", "running", "awaiting", "author", "why")
    for s in summaries:
        latest = s.awaiting[-1] if s.awaiting else s.running
        table.add_row(s.name, s.state, s.running.version if s.running else "-",
                      ", ".join(v.version for v in s.awaiting) or "-", (latest.author if latest else None) or "-",
                      s.refused.reason if s.refused else "")
    Console().print(table)
    if any(s.awaiting for s in summaries):
        typer.echo("See what changed with `twinsync module show NAME`; decide with `twinsync module approve NAME` "
                   "or `twinsync module reject NAME`.")


@app.command()
def show(name: Name, home: HomeOption, version: VersionOption = None, as_json: JsonOption = False) -> None:
    """Show a module's manifest, its files and the diff against the version approved here.

    Example: twinsync module show notes
    """
    with open_node(home) as node:
        detail = modules.show(node, name, version)
    if as_json:
        print_json(detail.to_dict())
        return
    s, v = detail.summary, detail.subject
    typer.echo(f"module {s.name}: {s.state}; running here: {s.running.version if s.running else 'nothing'}")
    if s.refused:
        typer.echo(f"refused ({s.refused.code}): {s.refused.reason}")
    if v is not None:
        typer.echo(f"version {v.version} by {v.author} ({v.status}), entry {v.entry}, serves "
                   f"{', '.join(v.serves) or '-'}\nmanifest {v.hash}")
        for rel, digest in sorted(detail.files.items()):
            typer.echo(f"  {digest[7:19]}  {rel}")
        changes = "; ".join(f"{k}: {', '.join(vs)}" for k, vs in detail.changes.items() if vs)
        if s.running and s.running.hash != v.hash:
            typer.echo(f"changes since {s.running.version}: {changes or 'none'}")
        if detail.diff:
            typer.echo(detail.diff.rstrip("\n"))


@app.command()
def approve(name: Name, home: HomeOption, version: VersionOption = None) -> None:
    """Run this version of the module on this node from now on (an older version rolls back to it).

    Example: twinsync module approve notes --version 1.1
    """
    with open_node(home) as node:
        chosen = modules.approve(node, name, version)
    typer.echo(f"Approved {chosen.label} on {node.name}; it runs from {modules.run_dir(node.layout, chosen)}.")


@app.command()
def reject(name: Name, home: HomeOption, version: VersionOption = None) -> None:
    """Never run this version here; the approved version (if any) keeps running.

    Example: twinsync module reject notes
    """
    with open_node(home) as node:
        chosen = modules.reject(node, name, version)
    typer.echo(f"Rejected {chosen.label} on {node.name}.")


@app.command()
def publish(directory: Annotated[Path, typer.Argument(help="Directory holding the module's files.",
                                                      exists=True, file_okay=False, resolve_path=True)],
            home: HomeOption,
            version: Annotated[str, typer.Option("--version", help="This version's name, e.g. 1.0.")],
            entry: Annotated[str, typer.Option(help="A file to run (e.g. main.py) or a Python package.module:function.")],
            serves: Annotated[Optional[list[str]], typer.Option("--serves", help="A goal or namespace it serves (repeat).")] = None,
            name: Annotated[Optional[str], typer.Option(help="Module name (default: the directory's name).")] = None) -> None:
    """Sign a directory as a module and share it with every node; it runs here at once, each other node asks its person.

    Example: twinsync module publish ./notes --version 1.0 --entry reason.py --serves plans
    """
    with open_node(home) as node:
        chosen = modules.publish(node, directory, version=version, entry=entry, serves=serves or (), name=name)
    typer.echo(f"Published {chosen.label} ({chosen.hash[:19]}); it runs here, and awaits approval on every other node.")


@app.command("log")
def log_(name: Name, home: HomeOption, as_json: JsonOption = False) -> None:
    """Every version of a module seen on this node, and what was decided about it.

    Example: twinsync module log notes
    """
    with open_node(home) as node:
        entries = modules.history(node, name)
    if as_json:
        print_json([{**v.to_dict(), "committed": r.date.isoformat() if r else None} for v, r in entries])
        return
    for v, r in entries:
        when = r.date.strftime("%Y-%m-%d %H:%M:%S") if r else "-"
        typer.echo(f"{(v.commit or '-')[:12]}  {when}  {v.version:<10} {v.author:<12} {v.status}"
                   + (f" by {v.decided_by}" if v.decided_by else ""))


def reason(goal: Annotated[str, typer.Argument(help="What to reason toward.")], home: HomeOption,
           timeout: Annotated[Optional[float], typer.Option(help="Seconds at most (never more than [reasoner] timeout_s).")] = None,
           module: Annotated[Optional[str], typer.Option(help="Run this approved module instead of the configured reasoner.")] = None,
           as_json: JsonOption = False) -> None:
    """Run this node's reasoner ([reasoner] command or approved module) on a goal; publish the session if coherent.

    Exit 1 when the reasoner gave no usable answer (the session stays a shadow with the reason).
    Example: twinsync trace reason "plan the week"
    """
    with open_node(home) as node:
        program = modules.program_of(node, module) if module else None
        result = reasoner.reason(node, goal, timeout_s=timeout, program=program)
    if as_json:
        print_json({**result.__dict__, "ok": result.ok})
    elif result.ok:
        typer.echo(f"{result.conclusion}\n({result.reasoner}, session {result.session}, {result.steps} steps, "
                   f"{result.elapsed_ms:.0f} ms, published)")
    else:
        typer.echo(f"Error: {result.reason} (shadow session {result.session})", err=True)
    if not result.ok:
        raise typer.Exit(1)
