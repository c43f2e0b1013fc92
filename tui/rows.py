"""Pure functions from the service layer's value objects to what the tables and panes show.

No Textual, no I/O, no clock: the same values give the same rows, so the widgets stay thin,
the snapshot tests are stable and `node_rows` can be timed on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from folders.decisions import PAST, ForkView
from folders.gitstore import Revision
from folders.fingerprint import Fingerprint
from folders.metrics import METRIC_NAMES, TOO_FEW, format_metric
from folders.snapshots import SnapshotInfo
from folders.trace import Step
from orchestrator.conflicts import VERSION_KINDS, ConflictItem, detail_lines
from orchestrator.frames import FrameEntry
from orchestrator.modules import ModuleSummary
from orchestrator.pairing import PeerStatus
from orchestrator.recovery import NodeRow, PeerPieces, fingerprint_verdict, pieces_summary, size_text
from orchestrator.status import NodeStatus
from orchestrator.traffic import PeerTraffic, rate_text
from tui.service import QueueData

MET, NOT_MET, NO_VALUE = "green", "red", "bright_black"

METRIC_LABELS = {
    "convergence": "trace consensus convergence",
    "conflict_rate": "frame conflict rate",
    "access_p95_ms": "reasoning access time (p95)",
    "routes_per_goal": "trace graph depth (routes per goal)",
}


class Row(NamedTuple):
    """One table row: a stable key (to keep the cursor on it across refreshes) and cells."""

    key: str
    cells: tuple[RenderableType, ...]


def short(step_or_hash: str | None) -> str:
    """The 12 hex digits people quote: sha256:abcdef012345… → abcdef012345."""
    if not step_or_hash:
        return "-"
    return step_or_hash.removeprefix("sha256:")[:12]


def minute(ts: str | None) -> str:
    """2026-11-25T08:00:00Z → 11-25 08:00, short enough for a table column."""
    if not ts:
        return "-"
    return f"{ts[5:10]} {ts[11:16]}" if len(ts) >= 16 else ts


def second(ts: str | None) -> str:
    """2026-11-25T08:00:00.123Z → 2026-11-25 08:00:00."""
    return ts[:19].replace("T", " ") if ts else "-"


# --- seed metrics ---------------------------------------------------------------------------

def judged_cell(name: str, value: float | None, verdict: bool | None, unjudged: str) -> Text:
    """A metric's value in its unit, green when it meets the seed threshold and red when not;
    `unjudged` in grey while there is nothing, or not enough, to judge (verdict None)."""
    if verdict is None:
        return Text(unjudged, style=NO_VALUE)
    return Text(format_metric(name, value), style=MET if verdict else NOT_MET)



def fingerprint_metric_cell(fp: Fingerprint, name: str) -> Text:
    """A node's metric from its fingerprint, judged on the counts the fingerprint carries (its
    frames for the conflict rate, its published sessions for the others): a fresh node's
    first few frames read "too few" in grey, not a red 75 %."""
    value = fp.metrics.get(name)
    return judged_cell(name, value, fingerprint_verdict(fp, name),
                       TOO_FEW if value is not None else format_metric(name, value))


def sparkline_values(history: Mapping[str, Sequence[tuple[str, float]]], name: str) -> list[float]:
    return [value for _, value in history.get(name, ())]


# --- nodes ----------------------------------------------------------------------------------

NODE_COLUMNS = ("node", "online", "link", "pieces", "↓ / ↑", "behind", "seen", "updated", "frames", "steps",
                "conflicts", "forks", "conv.", "confl.", "p95", "routes")


def _tri(value: bool | None, yes: str, no: str) -> Text:
    if value is None:
        return Text("?", style=NO_VALUE)
    return Text(yes, style=MET) if value else Text(no, style=NOT_MET)


def node_rows(rows: Sequence[NodeRow], peers: Mapping[str, PeerStatus] | None = None,
              this_node: str | None = None, traffic: Mapping[str, PeerTraffic] | None = None) -> list[Row]:
    """The Nodes table: one row per fingerprint; stale ones dimmed, unusable ones in red."""
    peers, traffic = peers or {}, traffic or {}
    out = []
    for r in rows:
        view, fp = r.fingerprint, r.fingerprint.fingerprint
        peer = peers.get(r.name)
        seen = "now" if r.name == this_node else minute(peer.last_seen if peer else None)
        name = Text(r.name + (" *" if r.name == this_node else ""))
        online = _tri(r.online, "yes", "no")
        link = link_cell(r.link)
        if fp is None:
            problem = view.problem.code if view.problem else "unusable"
            cells = (name, online, link, _pieces_cell(r.pieces), *_traffic_cells(traffic.get(r.name)), Text(seen),
                     Text(problem, style=NOT_MET), *(Text("-", style=NO_VALUE) for _ in NODE_COLUMNS[8:]))
            out.append(Row(r.name, tuple(cells)))
            continue
        cells = [name, online, link, _pieces_cell(r.pieces), *_traffic_cells(traffic.get(r.name)), Text(seen),
                 Text(minute(fp.created) + (" stale" if view.stale else "")),
                 _tri(r.frames_agree, "agree", "differ"),
                 Text(str(fp.trace_steps)),
                 Text(str(fp.pending_conflicts), style=NOT_MET if fp.pending_conflicts else ""),
                 Text(str(fp.pending_forks), style=NOT_MET if fp.pending_forks else ""),
                 *(fingerprint_metric_cell(fp, m) for m in METRIC_NAMES)]
        if view.stale:
            for cell in cells:
                cell.stylize("dim")
        out.append(Row(r.name, tuple(cells)))
    return out


def link_cell(link: Mapping[str, object] | None) -> Text:
    """A peer's link as the daemon last pinged it: its round trip, or "down" in red; "-" for
    this node and while no daemon measures."""
    if link is None:
        return Text("-", style=NO_VALUE)
    if link.get("rtt_ms") is None:
        return Text("down", style=NOT_MET)
    return Text(f"{link['rtt_ms']:.0f} ms")


def _traffic_cells(t: PeerTraffic | None) -> tuple[Text, Text]:
    """Syncthing's rates with the peer (down / up) and its out-of-sync items; this node has none."""
    if t is None:
        return Text("-", style=NO_VALUE), Text("-", style=NO_VALUE)
    rates = Text("paused", style=NOT_MET) if t.paused else Text(f"{rate_text(t.in_bps)} / {rate_text(t.out_bps)}")
    behind = Text("?" if t.need_items is None else str(t.need_items), style=NOT_MET if t.need_items else "")
    return rates, behind


def _pieces_cell(pieces: PeerPieces) -> Text:
    """The node's segments and snapshots not merged here: red when refused or a gap waits
    longer than [traces] gap_warning_s."""
    return Text(pieces_summary(pieces), style=NOT_MET if pieces.overdue or pieces.refused else "")


def _pieces_rows(grid: Table, pieces: PeerPieces) -> None:
    """Every waiting or refused file of the node, with its reason."""
    if pieces.gap is not None:
        since = f" since {second(pieces.waiting_since)}" if pieces.waiting_since else ""
        grid.add_row("gap", Text(f"waiting for segment #{pieces.gap[0]}{since}: {pieces.gap[1]}",
                                 style=NOT_MET if pieces.overdue else ""))
    for i, (path, reason) in enumerate(pieces.waiting):
        grid.add_row("waiting" if i == 0 else "", f"{path.rsplit('/', 1)[-1]}: {reason}")
    for i, (_, code, reason) in enumerate(pieces.refused):
        grid.add_row("refused" if i == 0 else "", Text(f"{code}: {reason}", style=NOT_MET))


def node_detail(row: NodeRow, status: NodeStatus | None, traffic: PeerTraffic | None = None) -> RenderableType:
    """Everything known about one node: its fingerprint and, from this node's Syncthing,
    the connection, the traffic and the folders shared with it."""
    view, fp = row.fingerprint, row.fingerprint.fingerprint
    this = status is not None and row.name == status.node
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    title = Text(row.name, style="bold")
    title.append("  (this node)" if this else "", style="italic")
    grid.add_row("node", title)
    grid.add_row("device", row.device_id or (fp.device_id if fp else "-"))
    if fp is None:
        problem = view.problem
        grid.add_row("fingerprint", Text(f"{problem.code}: {problem.message}" if problem else "unusable",
                                         style=NOT_MET))
        _pieces_rows(grid, row.pieces)
        return grid
    version = f"twinsync {fp.version}"
    if this and status.syncthing_version:
        version += f" · Syncthing {status.syncthing_version}"
    grid.add_row("version", version)
    grid.add_row("fingerprint", Text(second(fp.created) + ("  stale" if view.stale else "  fresh"),
                                     style="dim" if view.stale else ""))
    agree = {True: "agrees with the majority", False: "differs from the majority", None: "unknown"}
    grid.add_row("frames", f"{fp.frames_count} · root {short(fp.frames_root)} · {agree[row.frames_agree]}")
    grid.add_row("trace", f"{fp.trace_steps} steps · {fp.trace_sessions} sessions · head {short(fp.trace_head)}")
    grid.add_row("published", f"{second(fp.last_publish)} · merged {second(fp.last_merge)}")
    grid.add_row("pending", f"{fp.pending_conflicts} conflict(s) · {fp.pending_forks} fork(s)")
    _pieces_rows(grid, row.pieces)
    if row.link is not None:
        checked = f" · checked {second(str(row.link.get('at')))}" if row.link.get("at") else ""
        grid.add_row("link", Text(f"{row.link['rtt_ms']} ms round trip (signed ping){checked}")
                     if row.link.get("rtt_ms") is not None
                     else Text(f"down: {row.link.get('problem')}{checked}", style=NOT_MET))
    if status is not None:
        peer = next((p for p in status.peers if p.name == row.name), None)
        if peer is not None:
            state = {True: "connected", False: "not connected", None: "unknown"}[peer.connected]
            grid.add_row("syncthing", f"{state} · {peer.address or '-'} · last seen {second(peer.last_seen)}")
        if traffic is not None:
            behind = "?" if traffic.need_items is None else f"{traffic.need_items} item(s), {traffic.need_bytes or 0:,} bytes"
            grid.add_row("traffic", ("paused (p resumes) · " if traffic.paused else
                                     f"↓ {rate_text(traffic.in_bps)} · ↑ {rate_text(traffic.out_bps)} · ")
                         + f"out of sync there: {behind}")
        folders = [f for f in status.folders if this or row.name in f.shared_with]
        for i, f in enumerate(folders):
            done = "-" if f.completion is None else f"{f.completion:.0f}%"
            shared = ", ".join(f.shared_with) or "nobody"
            grid.add_row("folders" if i == 0 else "",
                         f"{f.id}  {f.type}  {f.state or '-'}  {done}  shared with {shared}")
    return grid


# --- the queue: conflicts, invalid files and forks in one list -------------------------------

@dataclass(frozen=True)
class QueueEntry:
    key: str
    kind: str  # a conflict item's kind (conflicts.KINDS) or fork
    subject: str
    source: str
    when: str
    state: str
    conflict: ConflictItem | None = None
    fork: ForkView | None = None
    module: ModuleSummary | None = None

    def text(self) -> str:
        return " ".join((self.kind, self.subject, self.source, self.when, self.state)).lower()


QUEUE_COLUMNS = ("kind", "frame / goal", "versions / authors", "when", "state")


def fork_time(view: ForkView, steps: Iterable[Step]) -> str:
    """When the fork appeared: the time of its newest branch step."""
    times = [s.ts for s in steps if s.hash in view.branches]
    return max(times)[:19] + "Z" if times else ""


def queue_entries(data: QueueData) -> list[QueueEntry]:
    """Frame conflicts, invalid files and forks in one list, newest first."""
    entries = []
    for item in data.conflicts:
        if item.kind in VERSION_KINDS:
            source = item.summary()
        else:
            source = item.device_name or item.device or "-"
        if item.decided:
            state = item.decision()
        elif item.kind in VERSION_KINDS:
            state = item.status
        else:
            state = (item.reason or "").split(":")[0] or item.status
        entries.append(QueueEntry(f"conflict:{item.id}", item.kind, item.frame or item.path, source,
                                  item.created, state, conflict=item))
    for view in data.forks:
        steps = data.steps.get(view.session, [])
        authors = sorted({s.author for s in steps if s.hash in view.branches})
        state = (f"{PAST[view.decision.verdict]} on {view.decision.author}" if view.decision else "consensus")
        entries.append(QueueEntry(f"fork:{view.id}", "fork", view.goal, ", ".join(authors) or "-",
                                  fork_time(view, steps), state, fork=view))
    for summary in data.modules:
        latest = summary.refused or summary.awaiting[-1]
        state = (summary.state if summary.refused
                 else f"awaiting approval: {', '.join(v.version for v in summary.awaiting)}")
        entries.append(QueueEntry(f"module:{summary.name}", "module", summary.name, latest.author or "-",
                                  latest.created, state, module=summary))
    return sorted(entries, key=lambda e: (e.when[:19], e.key), reverse=True)


def filter_entries(entries: Iterable[QueueEntry], text: str) -> list[QueueEntry]:
    """Entries whose kind, subject, source, time or state contain every word of `text`."""
    words = text.lower().split()
    return [e for e in entries if all(w in e.text() for w in words)]


KIND_STYLES = {"module": "blue", "conflict": "yellow", "deleted": "yellow", "invalid": "red", "rollback": "cyan", "quarantined": "red", "fork": "magenta"}


def queue_row(e: QueueEntry) -> Row:
    return Row(e.key, (Text(e.kind, style=KIND_STYLES.get(e.kind, "")), Text(e.subject), Text(e.source),
                       Text(minute(e.when)), Text(e.state)))


def queue_rows(entries: Iterable[QueueEntry]) -> list[Row]:
    return [queue_row(e) for e in entries]


def module_detail(summary: ModuleSummary) -> RenderableType:
    """A module item: what would run, who signed it, what runs now, or why it is refused."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("module", summary.name)
    grid.add_row("running here", summary.running.version if summary.running else "nothing")
    for version in summary.awaiting:
        grid.add_row(f"awaiting {version.version}", f"by {version.author}, entry {version.entry}, "
                     f"serves {', '.join(version.serves) or '-'}, manifest {short(version.hash)}")
    if summary.refused:
        grid.add_row(f"refused ({summary.refused.code})", Text(summary.refused.reason or ""))
        grid.add_row("", "Nothing of it runs; the item closes by itself when the folder is fixed.")
    else:
        grid.add_row("approve", "the newest awaiting version runs on this node from now on (from Git).")
        grid.add_row("reject", "it never runs here; " + ("the running version stays." if summary.running
                                                        else "nothing runs."))
        grid.add_row("diff", f"twinsync module show {summary.name}")
    return grid


def approve_consequence(item: ConflictItem) -> str:
    return f"approve: {item.consequences()[0]}"


def reject_consequence(item: ConflictItem) -> str:
    return f"reject: {item.consequences()[1]}"


FORK_CONSEQUENCE = ("A decision step is recorded and published; every node applies it "
                    "once it has merged the decision.")


def conflict_detail(item: ConflictItem, diff: str | None) -> RenderableType:
    head = Text()
    head.append(f"#{item.id} {item.kind} on {item.frame or item.path}", style="bold")
    head.append(f" — {item.status}, queued {second(item.created)}\n")
    for label, line in detail_lines(item):
        if label in ("approve", "reject"):
            head.append(label[0], style="bold")
            head.append(" ")
        head.append(f"{label}: ", style="bold")
        head.append(f"{line}\n", style=NOT_MET if label == "problem" else "")
    if item.kind == "invalid" and not item.decided:
        head.append("It closes by itself once the file is fixed or deleted on any node.")
    if item.kind not in VERSION_KINDS or item.decided:  # a decided item's files are gone: no diff
        return head
    if diff is None:
        return Group(head, Text("loading the diff…", style=NO_VALUE))
    if not diff:
        return Group(head, Text("The two bodies are identical.", style=NO_VALUE))
    return Group(head, Syntax(diff, "diff", theme="ansi_dark", word_wrap=True))


def branch_chain(steps: Sequence[Step], first: str) -> list[Step]:
    """The steps of a branch from its first step on, following the oldest child each time."""
    by_hash = {s.hash: s for s in steps}
    children: dict[str | None, list[Step]] = {}
    for s in steps:
        children.setdefault(s.parent, []).append(s)
    chain, current, seen = [], by_hash.get(first), set()
    while current is not None and current.hash not in seen:
        chain.append(current)
        seen.add(current.hash)
        nxt = sorted(children.get(current.hash, []), key=lambda s: (s.ts, s.hash))
        current = nxt[0] if nxt else None
    return chain


def fork_detail(view: ForkView, steps: Sequence[Step], selected: str) -> RenderableType:
    out = Text()
    out.append(f"fork {view.id} on goal {view.goal!r}", style="bold")
    out.append(f"\nsession {short(view.session)} · branches after step {short(view.parent)}\n")
    if view.decision:
        d = view.decision
        out.append(f"decision: {d.verdict} {short(d.branch)} by {d.author} at {second(d.ts)}\n")
    parent = next((s for s in steps if s.hash == view.parent), None)
    if parent is not None:
        out.append(f"from: {parent.kind}: {parent.content}\n", style="dim")
    for branch in view.branches:
        marks = []
        if branch == view.chosen:
            marks.append("applies")
        if branch == view.consensus_branch:
            marks.append("consensus")
        pointer = "▶ " if branch == selected else "  "
        out.append(f"\n{pointer}branch {short(branch)}", style="bold reverse" if branch == selected else "bold")
        if marks:
            out.append(f"  ({', '.join(marks)})", style=MET if "applies" in marks else "")
        out.append("\n")
        for s in branch_chain(steps, branch):
            out.append(f"    {second(s.ts)} {s.author:<8} {s.kind}: {s.content}\n")
    out.append("\nb", style="bold")
    out.append(" next branch · ")
    out.append("a", style="bold")
    out.append(" approve it · ")
    out.append("r", style="bold")
    out.append(f" reject it. {FORK_CONSEQUENCE}")
    return out


# --- snapshots, frames ----------------------------------------------------------------------

SNAPSHOT_COLUMNS = ("snapshot", "node", "created", "steps", "size", "verified")


def snapshot_rows(infos: Sequence[SnapshotInfo], verdicts: Mapping[str, str]) -> list[Row]:
    """Per node (by name), newest first within each node."""
    ordered = sorted(infos, key=lambda i: (i.node, _desc(i.created), i.manifest_path.name))
    rows = []
    for i in ordered:
        key = i.manifest_path.name
        verdict = verdicts.get(key, "")
        style = MET if verdict == "ok" else NOT_MET if verdict else NO_VALUE
        rows.append(Row(key, (Text(i.manifest_path.stem), Text(i.node), Text(second(i.created)),
                              Text(str(i.rows)), Text(size_text(i.size)),
                              Text(verdict or "-", style=style))))
    return rows


def _desc(text: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in text)


FRAME_COLUMNS = ("frame", "author", "created", "state")
REVISION_COLUMNS = ("revision", "date", "author", "message")


def frame_rows(entries: Sequence[FrameEntry]) -> list[Row]:
    return [Row(e.path, (Text(e.id or e.path), Text(e.author or "-"), Text(second(e.created)),
                         Text("valid", style=MET) if e.ok else Text(e.code, style=NOT_MET)))
            for e in entries]


def revision_rows(revisions: Sequence[Revision]) -> list[Row]:
    return [Row(r.commit, (Text(r.commit[:12]), Text(r.date.strftime("%Y-%m-%d %H:%M:%S")),
                           Text(r.author), Text(r.message.splitlines()[0] if r.message else "")))
            for r in revisions]
