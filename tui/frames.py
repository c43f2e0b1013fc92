"""The Frames tab: frames on disk with their verdict, the selected frame's Git history, and
`t` to bring back an old revision (as `twinsync frame restore ID --to REV` does)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import DataTable, Static

from folders.frame import Frame
from folders.gitstore import Revision
from orchestrator.frames import FrameEntry
from tui.dialogs import ConfirmScreen
from tui.pane import KeyedTable, Pane
from tui.rows import FRAME_COLUMNS, REVISION_COLUMNS, frame_rows, revision_rows, short


#: Lines of the old revision's diff the restore dialog shows before it says how many more.
PREVIEW_LINES = 24

class FramesPane(Pane):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.entries: dict[str, FrameEntry] = {}
        self.revisions: dict[str, Revision] = {}
        self.log_of: str | None = None  # the frame id whose history is shown

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield KeyedTable(FRAME_COLUMNS, id="frames-table")
            yield KeyedTable(REVISION_COLUMNS, id="revisions-table")
        yield Static("Loading frames…", id="frames-note", classes="note")

    def load(self) -> None:
        if not self.busy("frames"):
            self.call_service(self.service.frames, then=self.show_frames, group="frames", title="Frames")
        if self.log_of is not None:
            self._load_log(self.log_of)

    def show_frames(self, entries: list[FrameEntry]) -> None:
        self.entries = {e.path: e for e in entries}
        table = self.query_one("#frames-table", KeyedTable)
        table.show(frame_rows(entries))
        if not entries:
            self.query_one("#frames-note", Static).update("No frames yet (`twinsync frame put ID --body JSON`).")
        self._select(table.selected_key)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.data_table.id == "frames-table":
            self._select(event.row_key.value)

    def _select(self, key: str | None) -> None:
        entry = self.entries.get(key) if key else None
        note = self.query_one("#frames-note", Static)
        if entry is None:
            return
        if entry.id is None or not entry.ok:
            self.log_of = None
            self.revisions = {}
            self.query_one("#revisions-table", KeyedTable).show([])
            note.update(f"{entry.path}: {entry.message}")
            return
        note.update(f"{entry.id}: select a revision on the right, then t to restore it.")
        if entry.id != self.log_of:
            self.log_of = entry.id
            self._load_log(entry.id)

    def _load_log(self, frame_id: str) -> None:
        self.call_service(self.service.frame_log, frame_id, group="frame-log", title="History",
                          then=lambda revs: self._show_log(frame_id, revs))

    def _show_log(self, frame_id: str, revisions: list[Revision]) -> None:
        if frame_id != self.log_of:
            return
        self.revisions = {r.commit: r for r in revisions}
        self.query_one("#revisions-table", KeyedTable).show(revision_rows(revisions))

    def restore_revision(self) -> None:
        frame_id = self.log_of
        key = self.query_one("#revisions-table", KeyedTable).selected_key
        rev = self.revisions.get(key) if key else None
        if frame_id is None or rev is None:
            self.app.notify("Select a frame and one of its revisions first.", severity="warning")
            return
        self.call_service(self.service.revision_diff, frame_id, rev.commit, group="revision-diff",
                          title="Restore frame", then=lambda diff: self._confirm_restore(frame_id, rev, diff))

    def _confirm_restore(self, frame_id: str, rev: Revision, diff: str) -> None:
        """The dialog shows what comes back: the old revision's body against the current one."""
        lines = diff.splitlines()
        if len(lines) > PREVIEW_LINES:
            lines = lines[:PREVIEW_LINES] + [f"… {len(lines) - PREVIEW_LINES} more lines (`twinsync frame log`)"]
        preview = "\n".join(lines) if lines else "The body is the same as the current one."
        body = (f"{frame_id} comes back as it was at {rev.commit[:12]} ({rev.date:%Y-%m-%d %H:%M}, "
                f"by {rev.author}), as a new version signed by this node; every node gets it and "
                f"the history keeps both.\n\n{preview}")

        def answered(yes: bool | None) -> None:
            if yes:
                self.call_service(self.service.restore_frame, frame_id, rev.commit, group="restore-frame",
                                  exclusive=False, title="Restore frame",
                                  then=lambda frame: self._frame_restored(frame, rev))

        self.app.push_screen(ConfirmScreen(f"Restore {frame_id} to {rev.commit[:12]}?", body, "Restore"),
                             answered)

    def _frame_restored(self, frame: Frame, rev: Revision) -> None:
        self.app.notify(f"{frame.id} restored to {rev.commit[:12]}: new version {short(frame.hash)}.",
                        title="Frames", markup=False)
        self.load()
