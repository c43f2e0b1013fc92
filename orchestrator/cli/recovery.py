"""`twinsync trace publish|merge`, `nodes`, `snapshots`, `restore`."""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from folders.errors import TraceError
from folders.layout import check_node_name
from folders.metrics import TOO_FEW, format_metric
from orchestrator import recovery
from orchestrator.cli import complete
from orchestrator.cli.common import HomeOption, JsonOption, id_column, open_node, print_json, progress_bar
from orchestrator.lock import refuse_while_daemon_runs
from orchestrator.node import INTERACTIVE_TIMEOUT
from orchestrator.traffic import PeerTraffic, measure_traffic, rate_text
from syncthing.errors import SyncthingError


def publish(home: HomeOption, as_json: JsonOption = False) -> None:
    """Publish finished, coherent sessions now (the daemon also does it on its schedule).

    Example: twinsync trace publish
    """
    with open_node(home) as node:
        report = recovery.publish_now(node)
    if as_json:
        print_json(asdict(report))
    elif report.segment:
        typer.echo(f"published {report.steps} step(s) in {report.segment}"
                   + (f"; snapshot {report.snapshot}" if report.snapshot else ""))
    else:
        typer.echo("Nothing new to publish (sessions publish once finished and coherent: `trace show ID`).")


def merge(home: HomeOption, as_json: JsonOption = False) -> None:
    """Verify and merge what peers published, now (the daemon also does it on its schedule).

    Each node's segments merge in seq order; a gap is bridged by a snapshot of that node
    or waited for. Every file not merged is listed as waiting or refused, with its reason.
    Exit code: 0 when everything is merged or waiting (reordering is normal), 1 when a
    file was refused (remove it, or ask its node to publish again).

    Example: twinsync trace merge --json
    """
    with open_node(home) as node, progress_bar(off=as_json) as bar:
        task = bar.add_task("verifying and merging", total=None)
        report = recovery.merge_now(node, progress=lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        print_json(asdict(report))
    else:
        for owner, seq, rows in report.merged:
            typer.echo(f"merged {owner} #{seq}: {rows} new step(s)")
        for owner, seq, rows, path in report.bridged:
            typer.echo(f"bridged {owner} up to #{seq} with {path}: {rows} new step(s)")
        for path, reason in report.waiting:
            typer.echo(f"waiting: {path}: {reason}")
        for path, code, reason in report.refused:
            typer.echo(f"refused ({code}): {reason}", err=True)
        if not (report.merged or report.bridged or report.refused or report.waiting):
            typer.echo("Nothing new to merge.")
    if report.refused:
        raise typer.Exit(1)


def _fingerprint_dict(row: recovery.NodeRow, traffic: PeerTraffic | None) -> dict[str, Any]:
    fp = row.fingerprint
    return {"traffic": traffic.to_dict() if traffic else None,"name": row.name, "device_id": row.device_id, "online": row.online,
            "frames_agree": row.frames_agree, "ok": fp.ok, "stale": fp.stale,
            "problem": asdict(fp.problem) if fp.problem else None,
            "pieces": asdict(row.pieces),
            "daemon": row.daemon.to_dict() if row.daemon else None, "link": row.link,
            "fingerprint": fp.fingerprint.to_dict() if fp.fingerprint else None}


#: The seed metrics as `nodes` heads them (the TUI's Nodes tab uses the same short names).
METRIC_COLUMNS = {"convergence": "conv.", "conflict_rate": "confl.", "access_p95_ms": "p95", "routes_per_goal": "routes"}


def _metric_cell(fp, name: str) -> str:
    """In the metric's one unit (folders.metrics.format_metric), green or red against its
    seed threshold, or 'too few' while the node has too little to measure, as in the TUI."""
    value = fp.metrics.get(name)
    verdict = recovery.fingerprint_verdict(fp, name)
    if verdict is None:
        return format_metric(name, value) if value is None else f"[bright_black]{TOO_FEW}[/]"
    return f"[{'green' if verdict else 'red'}]{format_metric(name, value)}[/]"


def nodes(home: HomeOption, as_json: JsonOption = False) -> None:
    """Every node's signed fingerprint: online, frames agreement, trace, pending work, metrics;
    and per peer, Syncthing's transfer rates (down / up, measured over half a second) and
    how many items of twinsync's folders it still lacks ("behind").

    Example: twinsync nodes --json
    """
    with open_node(home, timeout=INTERACTIVE_TIMEOUT) as node:
        rows = recovery.nodes(node)
        try:
            traffic = {t.name: t for t in measure_traffic(node)}
        except SyncthingError:
            traffic = {}
    if as_json:
        print_json([_fingerprint_dict(r, traffic.get(r.name)) for r in rows])
        return
    table = Table("node", "online", "link", "frames", "steps", "conflicts", "forks", *METRIC_COLUMNS.values(),
                  "pieces", "↓ / ↑", "behind", "updated")
    for r in rows:
        rates, behind = _traffic_cells(traffic.get(r.name))
        fp = r.fingerprint.fingerprint
        online = {True: "yes", False: "no", None: "?"}[r.online]
        agree = {True: "agree", False: "[red]differ[/]", None: "?"}[r.frames_agree]
        pieces = recovery.pieces_summary(r.pieces)
        if r.pieces.overdue or r.pieces.refused:
            pieces = f"[red]{pieces}[/]"
        link = link_cell(r)
        if fp is None:
            table.add_row(r.name, online, link, "-", "-", "-", "-", *("-" for _ in METRIC_COLUMNS), pieces, rates, behind,
                          f"[red]{r.fingerprint.problem.code}[/]")
            continue
        style = "dim" if r.fingerprint.stale else None
        table.add_row(r.name, online, link, agree, str(fp.trace_steps), str(fp.pending_conflicts),
                      str(fp.pending_forks), *(_metric_cell(fp, m) for m in METRIC_COLUMNS), pieces, rates, behind,
                      fp.created + (" (stale)" if r.fingerprint.stale else ""), style=style)
    Console().print(table)
    for r in rows:
        if r.daemon is not None:
            typer.echo(f"{r.name}: daemon {r.daemon.state}: {r.daemon.message}")
        if r.pieces.overdue:
            typer.echo(f"{r.name}: warning: waiting for segment #{r.pieces.gap[0]} since "
                       f"{r.pieces.waiting_since}, longer than [traces] gap_warning_s")
        for path, reason in r.pieces.waiting:
            typer.echo(f"{r.name}: waiting: {path}: {reason}")
        for path, code, reason in r.pieces.refused:
            typer.echo(f"{r.name}: refused ({code}): {reason}")
        if r.link and r.link.get("problem"):
            typer.echo(f"{r.name}: link: {r.link['problem']}")


def link_cell(row: recovery.NodeRow) -> str:
    """A peer's link: its last round trip, "down", or "-" (this node, or no daemon measuring)."""
    if row.link is None:
        return "-"
    if row.link.get("rtt_ms") is None:
        return "[red]down[/]"
    return f"{row.link['rtt_ms']:.0f} ms"


def _traffic_cells(t: PeerTraffic | None) -> tuple[str, str]:
    if t is None:
        return "-", "-"
    rates = "paused" if t.paused else f"{rate_text(t.in_bps)} / {rate_text(t.out_bps)}"
    behind = "?" if t.need_items is None else str(t.need_items)
    return rates, behind


def snapshots(home: HomeOption, as_json: JsonOption = False,
              node_name: Annotated[Optional[str], typer.Option("--node", help="Only this node's snapshots.")] = None,
              check: Annotated[bool, typer.Option("--verify", help="Verify each one (hash, signature, every step).")] = False) -> None:
    """List recovery snapshots of every node (newest first), optionally verified.

    Example: twinsync snapshots --node laptop --verify
    """
    if node_name is not None:
        check_node_name(node_name)
    with open_node(home) as node:
        infos = recovery.snapshots(node, node_name)
        verdicts: dict[str, str] = {}
        if check:
            for info in infos:
                try:
                    recovery.verify(node, info)
                    verdicts[info.manifest_path.name] = "ok"
                except TraceError as exc:
                    verdicts[info.manifest_path.name] = f"refused: {exc}"
    if as_json:
        print_json([{**asdict(i), "db_path": str(i.db_path), "manifest_path": str(i.manifest_path),
                     "verified": verdicts.get(i.manifest_path.name)} for i in infos])
        return
    if not infos:
        of = f" of node {node_name}" if node_name else ""
        typer.echo(f"No snapshots{of} yet (the daemon makes one every few segments; `trace publish` too).")
        return
    table = Table(id_column("snapshot", [i.manifest_path.stem for i in infos]), "node", "created", "steps", "size",
                  *(["verified"] if check else []))
    for i in infos:
        table.add_row(i.manifest_path.stem, i.node, i.created[:19], str(i.rows), recovery.size_text(i.size),
                      *([verdicts[i.manifest_path.name]] if check else []))
    Console().print(table)


#: Exit code of a restore the user declined (no, Ctrl-D, or no terminal to ask on): nothing changed.
EXIT_DECLINED = 3
#: Exit code after Ctrl-C, as shells report a command stopped by SIGINT.
EXIT_INTERRUPTED = 130


def _ask(question: str) -> None:
    """Ask before replacing trace.db. A no, a Ctrl-D or no terminal to ask on say that nothing
    changed and how to restore without the question; a Ctrl-C only that nothing changed."""
    hint = "Nothing was restored; trace.db is unchanged. To restore without this question, add --yes."
    if not sys.stdin.isatty():
        typer.echo(f"Error: restore asks before replacing trace.db and there is no terminal to ask on. {hint}",
                   err=True)
        raise typer.Exit(EXIT_DECLINED)
    try:
        answer = typer.confirm(question)
    except typer.Abort as abort:  # typer's own class since typer 0.2x vendors click: not click.Abort
        if isinstance(abort.__context__, EOFError):  # Ctrl-D: the end of the answers, a no
            typer.echo(f"\n{hint}", err=True)
            raise typer.Exit(EXIT_DECLINED) from None
        typer.echo("\nNothing was restored; trace.db is unchanged.", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if not answer:
        typer.echo(hint, err=True)
        raise typer.Exit(EXIT_DECLINED)


def restore(
    home: HomeOption,
    snapshot: Annotated[Optional[str], typer.Argument(help="Snapshot name from `twinsync snapshots`, or a unique beginning of it (default: the latest).", autocompletion=complete.snapshot_names)] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Use the newest snapshot (the default).")] = False,
    node_name: Annotated[Optional[str], typer.Option("--node", help="Whose snapshot (default: this node's).")] = None,
    as_new_machine: Annotated[bool, typer.Option("--as-new-machine", help="Take over a dead node's published trace on this fresh node.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Restore trace.db from a verified snapshot; the old one is kept as trace.db.bak-<time>,
    this node's unpublished sessions come back on top, and every newer segment is merged
    again. Refused while `twinsync run` runs for this node: stop it first.

    It asks first; without a terminal (a script, cron) give --yes. Exit codes: 0 restored,
    1 an error (one sentence says what to do), 3 declined (no, Ctrl-D) or no terminal to
    ask on (nothing changed), 130 Ctrl-C at the question (nothing changed).

    Example: twinsync restore --latest --yes
    """
    if snapshot and latest:
        raise typer.BadParameter("give a snapshot name or --latest, not both.")
    with open_node(home) as node:
        refuse_while_daemon_runs(node.layout.home, "restore")  # before asking, not after
        info = recovery.find_snapshot(node, snapshot, node_name)
        if not yes:
            _ask(f"Replace {node.layout.trace_db} with {info.manifest_path.stem} of {info.node} "
                 f"({info.rows} steps)? The current one is kept aside")
        with progress_bar() as bar:
            task = bar.add_task("restoring", total=None)
            report = recovery.restore(  # a full bar then says what the seconds after the copy are for
                node, info, as_new_machine=as_new_machine,
                progress=lambda done, total: bar.update(task, completed=done, total=total,
                                                        description=recovery.restore_stage(done, total)))
    typer.echo(recovery.restore_summary(report))
