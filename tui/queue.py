"""The Queue tab: frame conflicts, invalid files, rollbacks, quarantined files, trace forks
and modules awaiting approval (or refused) in one list, decided here with the same service
calls as `twinsync approve|reject`, `twinsync fork approve|reject` and `twinsync module
approve|reject`."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Input, Static, TabbedContent

from folders.decisions import ForkView
from orchestrator.conflicts import DIFF_KINDS, ConflictItem, detail_lines
from tui.dialogs import ConfirmScreen
from tui.pane import KeyedTable, Pane
from orchestrator.modules import ModuleSummary, ModuleVersion
from tui.rows import (FORK_CONSEQUENCE, QUEUE_COLUMNS, QueueEntry, Row, approve_consequence,
                      conflict_detail, filter_entries, fork_detail, module_detail, queue_entries, queue_row,
                      reject_consequence, short)
from tui.service import QueueData


FILTER_HINT = "filter: frame, goal, node, kind, state…  (/)   h: decided items"


class QueuePane(Pane):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data = QueueData([], [], {})
        self.entries: dict[str, QueueEntry] = {}
        self.rows: dict[str, tuple[QueueEntry, Row]] = {}  # key -> the entry its row was built from
        self.diffs: dict[int, str] = {}  # conflict id -> diff, loaded once per item
        self.branches: dict[str, str] = {}  # fork id -> the branch `a`/`r` act on
        self.shown_detail: tuple | None = None
        self.loaded = False
        self.history = False  # `h`: decided items (who decided what, where) instead of the open queue

    def compose(self) -> ComposeResult:
        yield Input(placeholder=FILTER_HINT, id="queue-filter")
        yield KeyedTable(QUEUE_COLUMNS, id="queue-table")
        with VerticalScroll(id="queue-detail-box", classes="detail"):
            yield Static("Loading the queue…", id="queue-detail")

    # -- data ----------------------------------------------------------------------------

    def load(self) -> None:
        if not self.busy("queue"):
            self.call_service(lambda: self.service.queue(history=self.history), then=self.show_queue,
                              group="queue", title="Queue")

    def show_queue(self, data: QueueData) -> None:
        if data.history != self.history:  # loaded before `h` was pressed
            return
        self.data = data
        self.loaded = True
        self._redraw()
        open_items = len(data.conflicts) + len(data.forks) + len(data.modules)
        self.query_ancestor(TabbedContent).get_tab("queue").label = (
            "Queue (history)" if data.history else f"Queue ({open_items})" if open_items else "Queue")

    def toggle_history(self) -> None:
        """The open queue, or what was decided (by whom, where): like `conflicts --decided`."""
        self.history = not self.history
        self.loaded = False
        self.rows = {}
        self.query_one("#queue-filter", Input).placeholder = (
            "history: decided items, who decided and where  (h: back to the open queue)" if self.history
            else FILTER_HINT)
        self.app.notify("Showing decided items: who decided what, and where (h: open queue)." if self.history
                        else "Showing the open queue (h: decided items).", title="Queue", timeout=3)
        self.load()

    def _redraw(self) -> None:
        entries = filter_entries(queue_entries(self.data), self.query_one("#queue-filter", Input).value)
        self.entries = {e.key: e for e in entries}
        table = self.query_one("#queue-table", KeyedTable)
        table.show(self._rows(entries))
        self._show_detail(table.selected_key)

    def _rows(self, entries: list[QueueEntry]) -> list[Row]:
        """The table's rows, rebuilding only those whose entry changed: building 10,000 rows
        of rich Text on every refresh took ~170 ms, and the garbage it left behind as much
        again in the collector; unchanged rows, the same objects, also compare at once."""
        built = {}
        for e in entries:
            cached = self.rows.get(e.key)
            built[e.key] = cached if cached is not None and cached[0] == e else (e, queue_row(e))
        self.rows = built
        return [row for _, row in built.values()]

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._redraw()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.focus_main()

    def on_key(self, event: events.Key) -> None:
        if event.key == "escape" and isinstance(self.app.focused, Input):
            event.stop()
            self.focus_main()

    def focus_filter(self) -> None:
        self.query_one("#queue-filter", Input).focus()

    # -- detail --------------------------------------------------------------------------

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show_detail(event.row_key.value)

    def selected(self) -> QueueEntry | None:
        key = self.query_one("#queue-table", KeyedTable).selected_key
        return self.entries.get(key) if key else None

    def _show_detail(self, key: str | None) -> None:
        detail = self.query_one("#queue-detail", Static)
        entry = self.entries.get(key) if key else None
        if entry is None:
            state = ("Nothing matches the filter." if self.data.conflicts or self.data.forks or self.data.modules
                     else "Nothing decided yet (h: back to the open queue)." if self.loaded and self.history
                     else "The queue is empty: no conflict copies, invalid files, rollbacks, "
                          "quarantined files, forks or modules to approve (h: decided items)."
                     if self.loaded else "Loading the queue…")
            if self.shown_detail != ("empty", state):
                detail.update(state)
                self.shown_detail = ("empty", state)
            return
        if entry.conflict is not None:
            item = entry.conflict
            diff = self.diffs.get(item.id)
            if (diff is None and item.kind in DIFF_KINDS and not item.decided
                    and not self.busy(f"diff-{item.id}")):
                self.call_service(self.service.conflict_diff, item, group=f"diff-{item.id}",
                                  then=lambda text, i=item.id: self._diff_loaded(i, text), title="Diff")
            shown = ("conflict", item, diff)
            renderable = lambda: conflict_detail(item, diff)  # noqa: E731
        elif entry.module is not None:
            summary = entry.module
            shown = ("module", summary)
            renderable = lambda: module_detail(summary)  # noqa: E731
        else:
            fork = entry.fork
            selected = self.branch_of(fork)
            steps = self.data.steps.get(fork.session, [])
            shown = ("fork", fork, selected, tuple(steps))
            renderable = lambda: fork_detail(fork, steps, selected)  # noqa: E731
        if shown != self.shown_detail:
            detail.update(renderable())
            self.shown_detail = shown

    def _diff_loaded(self, item_id: int, text: str) -> None:
        self.diffs[item_id] = text
        entry = self.selected()
        if entry is not None and entry.conflict is not None and entry.conflict.id == item_id:
            self._show_detail(entry.key)

    def branch_of(self, fork: ForkView) -> str:
        branch = self.branches.get(fork.id)
        return branch if branch in fork.branches else fork.chosen

    def next_branch(self) -> None:
        entry = self.selected()
        if entry is None or entry.fork is None:
            self.app.notify("Select a fork to choose between its branches.", severity="warning")
            return
        fork = entry.fork
        branches = list(fork.branches)
        self.branches[fork.id] = branches[(branches.index(self.branch_of(fork)) + 1) % len(branches)]
        self._show_detail(entry.key)

    # -- decisions -----------------------------------------------------------------------

    def decide(self, approve: bool) -> None:
        entry = self.selected()
        if entry is None:
            self.app.notify("Select an item of the queue first.", severity="warning")
            return
        if entry.conflict is not None and entry.conflict.decided:
            self.app.notify(f"Item #{entry.conflict.id} is already {entry.conflict.decision()}.",
                            severity="warning", markup=False)
        elif entry.conflict is not None:
            self._decide_conflict(entry.conflict, approve)
        elif entry.module is not None:
            self._decide_module(entry.module, approve)
        else:
            self._decide_fork(entry.fork, approve)

    def _decide_conflict(self, item: ConflictItem, approve: bool) -> None:
        if item.consequences() is None:
            self.app.notify(f"Item #{item.id} is an invalid file, not a conflict: fix or delete "
                            f"{item.path} and it closes by itself.", severity="warning", markup=False)
            return
        verb = "Approve" if approve else "Reject"
        body = "\n".join(f"{label}: {line}" for label, line in detail_lines(item)
                         if label not in ("approve", "reject", "fork branch"))
        body += "\n\n" + (approve_consequence(item) if approve else reject_consequence(item))

        def answered(yes: bool | None) -> None:
            if yes:
                self.call_service(self.service.decide_conflict, item.id, approve=approve,
                                  then=self._conflicts_decided, group="decide", exclusive=False,
                                  title=f"{verb} #{item.id}")

        self.app.push_screen(ConfirmScreen(f"{verb} {item.kind} #{item.id} on {item.frame}?", body, verb), answered)

    def _conflicts_decided(self, items: list[ConflictItem]) -> None:
        for item in items:
            self.app.notify(f"#{item.id} {item.frame}: {item.decision()}", title="Queue", markup=False)
        self.load()

    def _decide_module(self, summary: ModuleSummary, approve: bool) -> None:
        if summary.refused is not None:
            self.app.notify(f"Module {summary.name} is refused ({summary.refused.code}); nothing of it runs, and the "
                            "item closes by itself when its folder is fixed.", severity="warning", markup=False)
            return
        verb = "Approve" if approve else "Reject"
        version = summary.awaiting[-1]
        body = (f"{version.label} by {version.author} runs on this node from now on, checked out of Git."
                if approve else f"{version.label} never runs on this node; "
                + ("the running version stays." if summary.running else "nothing runs."))

        def answered(yes: bool | None) -> None:
            if yes:
                self.call_service(self.service.decide_module, summary.name, approve=approve,
                                  then=self._module_decided, group="decide", exclusive=False,
                                  title=f"{verb} module {summary.name}")

        self.app.push_screen(ConfirmScreen(f"{verb} {version.label}?", body, verb), answered)

    def _module_decided(self, version: ModuleVersion) -> None:
        self.app.notify(f"{version.label}: {version.status}", title="Queue", markup=False)
        self.load()

    def _decide_fork(self, fork: ForkView, approve: bool) -> None:
        verb, verdict = ("Approve", "approve") if approve else ("Reject", "reject")
        branch = self.branch_of(fork)
        body = f"Goal {fork.goal!r}, session {short(fork.session)}. {FORK_CONSEQUENCE}"

        def answered(yes: bool | None) -> None:
            if yes:
                self.call_service(self.service.decide_fork, fork.id, branch, verdict,
                                  then=lambda view: self._fork_decided(view, verdict), group="decide",
                                  exclusive=False, title=f"{verb} fork {fork.id}")

        self.app.push_screen(ConfirmScreen(f"{verb} branch {short(branch)} of fork {fork.id}?", body, verb),
                             answered)

    def _fork_decided(self, view: ForkView, verdict: str) -> None:
        self.app.notify(f"fork {view.id}: {verdict} recorded; branch {short(view.chosen)} applies "
                        "(on every node once the decision is published and merged).",
                        title="Queue", markup=False)
        self.load()
