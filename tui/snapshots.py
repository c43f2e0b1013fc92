"""The Snapshots tab: every node's recovery snapshots; verify one, or restore trace.db from it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import ProgressBar, Static
from textual.worker import get_current_worker

from folders.errors import TwinsyncError
from folders.snapshots import SnapshotInfo
from orchestrator.recovery import RestoreReport, restore_stage, restore_summary
from tui.dialogs import ConfirmScreen
from tui.pane import KeyedTable, Pane
from tui.rows import SNAPSHOT_COLUMNS, second, snapshot_rows


class SnapshotsPane(Pane):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.infos: dict[str, SnapshotInfo] = {}
        self.verdicts: dict[str, str] = {}
        self.loaded = False
        self.restoring = False

    def compose(self) -> ComposeResult:
        yield KeyedTable(SNAPSHOT_COLUMNS, id="snapshots-table")
        yield ProgressBar(total=None, show_eta=False, id="restore-progress")
        yield Static("Loading snapshots…", id="snapshots-note", classes="note")

    def on_mount(self) -> None:
        self.query_one("#restore-progress").display = False

    def load(self) -> None:
        if not self.busy("snapshots"):
            self.call_service(self.service.snapshots, then=self.show_snapshots, group="snapshots",
                              title="Snapshots")

    def show_snapshots(self, infos: list[SnapshotInfo]) -> None:
        self.loaded = True
        self.infos = {i.manifest_path.name: i for i in infos}
        self._redraw()

    def _redraw(self) -> None:
        self.query_one("#snapshots-table", KeyedTable).show(snapshot_rows(list(self.infos.values()), self.verdicts))
        note = self.query_one("#snapshots-note", Static)
        if self.restoring:
            return
        note.update("v verify the selected snapshot · R restore trace.db from it" if self.infos else
                    "No snapshots yet (the daemon makes one every few segments; `twinsync trace publish` too).")

    def selected(self) -> SnapshotInfo | None:
        key = self.query_one("#snapshots-table", KeyedTable).selected_key
        info = self.infos.get(key) if key else None
        if info is None:
            self.app.notify("Select a snapshot first.", severity="warning")
        return info

    # -- verify ----------------------------------------------------------------------------

    def verify(self) -> None:
        info = self.selected()
        if info is None:
            return
        name = info.manifest_path.name
        self.verdicts[name] = "verifying…"
        self._redraw()
        self.call_service(self._verdict, info, then=lambda verdict: self._verified(info, verdict),
                          group=f"verify-{name}", title="Verify",
                          after_error=lambda: self._verified(info, ""))

    def _verdict(self, info: SnapshotInfo) -> str:
        """Runs in the worker: `ok`, or `refused: <why>` as `twinsync snapshots --verify` says."""
        try:
            self.service.verify(info)
        except TwinsyncError as exc:
            return f"refused: {exc}"
        return "ok"

    def _verified(self, info: SnapshotInfo, verdict: str) -> None:
        name = info.manifest_path.name
        if verdict:
            self.verdicts[name] = verdict
        else:
            self.verdicts.pop(name, None)
        self._redraw()
        if verdict == "ok":
            self.app.notify(f"{info.manifest_path.stem} of {info.node}: ok ({info.rows} steps; hash, "
                            "signature and every step check out).", title="Verify", markup=False)
        elif verdict:
            self.app.notify(f"{info.manifest_path.stem}: {verdict}", title="Verify", severity="error",
                            timeout=12, markup=False)

    # -- restore ---------------------------------------------------------------------------

    def restore(self) -> None:
        if self.restoring:
            self.app.notify("A restore is already running.", severity="warning")
            return
        info = self.selected()
        if info is None:
            return
        this = self.app.node_name  # type: ignore[attr-defined]
        takeover = this is not None and info.node != this
        body = (f"trace.db is replaced by snapshot {info.manifest_path.stem} of {info.node} "
                f"({info.rows} steps, made {second(info.created)}), verified first. The current "
                "trace.db is kept aside as trace.db.bak-<time>, never overwritten, and every "
                "segment published since the snapshot is merged again; this node's unpublished sessions "
                "come back on top. Refused while `twinsync run` runs for this node: stop it first.")
        if takeover:
            body += (f"\n\nThis is {info.node}'s snapshot, not {this}'s: this node takes over "
                     f"{info.node}'s published trace, as a new machine replacing it.")

        def answered(yes: bool | None) -> None:
            if yes:
                self._start_restore(info, takeover)

        self.app.push_screen(ConfirmScreen(f"Restore from {info.manifest_path.stem}?", body, "Restore"),
                             answered)

    def _start_restore(self, info: SnapshotInfo, takeover: bool) -> None:
        self.restoring = True
        bar = self.query_one("#restore-progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        self.query_one("#snapshots-note", Static).update(f"Restoring from {info.manifest_path.stem}…")

        def progress(done: int, total: int) -> None:
            """Called by the restore in the worker thread, as the snapshot is copied in (bytes so far)."""
            if get_current_worker().is_cancelled:
                return
            try:
                self.app.call_from_thread(self._progressed, info, done, total)
            except RuntimeError:  # the app is closing
                pass

        self.call_service(self.service.restore, info, as_new_machine=takeover, progress=progress,
                          then=self._restored, group="restore", title="Restore",
                          after_error=self._restore_over)

    def _progressed(self, info: SnapshotInfo, done: int, total: int) -> None:
        """The bar follows the copy, then pulses while the checks and the merge run."""
        self.query_one("#restore-progress", ProgressBar).update(total=total if done < total else None, progress=done)
        self.query_one("#snapshots-note", Static).update(
            f"Restoring from {info.manifest_path.stem}: {restore_stage(done, total)}…")

    def _restored(self, report: RestoreReport) -> None:
        self._restore_over()
        self.app.notify(restore_summary(report), title="Restore", timeout=12, markup=False)

    def _restore_over(self) -> None:
        self.restoring = False
        self.query_one("#restore-progress", ProgressBar).display = False
        self.load()
        self._redraw()
