"""`twinsync frame put|get|list|log|restore|promote`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from folders.errors import FrameError, echo
from folders.frame import frame_path, too_deep
from orchestrator import frames
from orchestrator.heartbeat import NOT_RUNNING, read_health
from orchestrator.cli import complete
from orchestrator.cli.common import HomeOption, JsonOption, open_node, print_json

app = typer.Typer(help="Signed frames: write, read, list, history, restore and promote shadows.",
                  no_args_is_help=True)

FrameId = Annotated[str, typer.Argument(help="Frame id: NAMESPACE/NAME, e.g. notes/today.", autocompletion=complete.frame_ids)]


def _body(body: str | None, file: Path | None) -> dict:
    if (body is None) == (file is None):
        raise typer.BadParameter("give the body with exactly one of --body JSON or --file F.")
    source = "--body" if body is not None else echo(str(file), quoted=False)
    try:
        text = body if body is not None else file.read_text(encoding="utf-8")
        return json.loads(text)
    except OSError as exc:
        raise FrameError(f"Cannot read {source} ({exc.strerror}); check the path and its permissions.") from None
    except RecursionError:
        raise too_deep(f"The body in {source}") from None
    except ValueError as exc:
        raise FrameError(f"The body in {source} is not valid JSON ({exc}).") from None


@app.command()
def put(
    frame_id: FrameId,
    home: HomeOption,
    body: Annotated[Optional[str], typer.Option(help="The body as a JSON object.")] = None,
    file: Annotated[Optional[Path], typer.Option(help="Read the body from this JSON file.")] = None,
    shadow: Annotated[bool, typer.Option("--shadow", help="Keep it local in frames.local/ (not synced).")] = False,
) -> None:
    """Sign and save a new version of a frame; it is committed and synced at once.

    Example: twinsync frame put notes/today --body '{"text": "hello"}'
    """
    with open_node(home) as node:
        frame = frames.put_frame(node, frame_id, _body(body, file), shadow=shadow)
    where = "shadow (local only)" if shadow else "shared"
    typer.echo(f"{frame.id} {frame.hash[:19]} saved as {where}")


@app.command()
def get(frame_id: FrameId, home: HomeOption, as_json: JsonOption = False,
        shadow: Annotated[bool, typer.Option("--shadow", help="Read the shadow frame.")] = False) -> None:
    """Print a frame's body after checking its hash and signature (--json: the whole frame).

    Example: twinsync frame get notes/today --json
    """
    with open_node(home) as node:
        frame = frames.get_frame(node, frame_id, shadow=shadow)
    print_json(frame.to_dict() if as_json else frame.body)


@app.command("list")
def list_(home: HomeOption, as_json: JsonOption = False,
          shadow: Annotated[bool, typer.Option("--shadow", help="List shadow frames.")] = False) -> None:
    """List frames with their verdict; invalid files are shown, never hidden.

    Example: twinsync frame list --json
    """
    with open_node(home) as node:
        entries = frames.list_frames(node, shadow=shadow)
    if as_json:
        print_json([asdict(e) for e in entries])
        return
    table = Table("frame", "author", "created", "status")
    for e in entries:
        status = "[green]valid[/]" if e.ok else f"[red]{e.code}[/]"
        table.add_row(e.id or e.path, e.author or "-", e.created or "-", status)
    Console().print(table)


@app.command()
def log(frame_id: FrameId, home: HomeOption, as_json: JsonOption = False) -> None:
    """Show a frame's Git history, newest first.

    Example: twinsync frame log notes/today
    """
    with open_node(home) as node:
        try:
            revisions = frames.frame_log(node, frame_id)
        except FrameError:
            # On disk but not in Git: it arrived from a peer, and committing it is the daemon's job.
            on_disk = frame_path(node.layout.frames_shared, frame_id).is_file()
            if not on_disk or read_health(node.layout.home).state != NOT_RUNNING:
                raise
            raise FrameError(f"{echo(frame_id)} has no history in Git yet because no twinsync daemon "
                             "runs for this node to commit what peers send; start it with `twinsync run`, "
                             "then ask again.") from None
    if as_json:
        print_json([{**asdict(r), "date": r.date.isoformat()} for r in revisions])
        return
    for r in revisions:
        typer.echo(f"{r.commit[:12]}  {r.date:%Y-%m-%d %H:%M:%S}  {r.author:<12} {r.message.splitlines()[0]}")


@app.command()
def restore(frame_id: FrameId, home: HomeOption,
            to: Annotated[str, typer.Option("--to", help="Revision from `frame log` (or a fork branch).")]) -> None:
    """Bring back an old version as a new change, signed by this node (it then syncs).

    Example: twinsync frame restore notes/today --to 3f2a9c1e0b7d
    """
    with open_node(home) as node:
        frame = frames.restore_frame(node, frame_id, to)
    typer.echo(f"{frame.id} restored from {to} as {frame.hash[:19]}")


@app.command()
def promote(frame_id: FrameId, home: HomeOption) -> None:
    """Check a shadow frame and move it into frames.shared/ so every node gets it.

    Example: twinsync frame promote notes/draft
    """
    with open_node(home) as node:
        frame = frames.promote_frame(node, frame_id)
    typer.echo(f"{frame.id} promoted to shared")
