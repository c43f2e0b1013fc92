"""The Nodes tab: every node's signed fingerprint, and the selected node's details."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from orchestrator.recovery import NodeRow
from orchestrator.status import NodeStatus
from tui.pane import KeyedTable, Pane
from tui.rows import NODE_COLUMNS, node_detail, node_rows


class NodesPane(Pane):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rows: dict[str, NodeRow] = {}
        self.status: NodeStatus | None = None

    def compose(self) -> ComposeResult:
        yield KeyedTable(NODE_COLUMNS, id="nodes-table")
        with VerticalScroll(id="node-detail-box", classes="detail"):
            yield Static("Loading fingerprints…", id="node-detail")

    def load(self) -> None:
        if not self.busy("nodes"):
            self.call_service(self.service.nodes, then=self.show_nodes, group="nodes",
                              title="Nodes")

    def show_nodes(self, rows: list[NodeRow]) -> None:
        self.rows = {r.name: r for r in rows}
        self._redraw()

    def show_status(self, status: NodeStatus) -> None:
        """The header's latest status: peers' last seen and folders in the detail."""
        self.status = status
        self._redraw()

    def _redraw(self) -> None:
        table = self.query_one("#nodes-table", KeyedTable)
        peers = {p.name: p for p in self.status.peers} if self.status else {}
        table.show(node_rows(list(self.rows.values()), peers, self.status.node if self.status else None))
        self._show_detail(table.selected_key)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show_detail(event.row_key.value)

    def _show_detail(self, key: str | None) -> None:
        detail = self.query_one("#node-detail", Static)
        row = self.rows.get(key) if key else None
        if row is None:
            detail.update("No fingerprints yet: every node writes one when it publishes "
                          "(`twinsync trace publish`, or the daemon on its schedule)."
                          if not self.rows else "")
            return
        detail.update(node_detail(row, self.status))
