"""The Nodes tab: every node's signed fingerprint, Syncthing's traffic with each peer, and
the selected node's details; the controls a Syncthing user expects act on the selected
peer (pause/resume, unpair) or on this node (rescan, open Syncthing's GUI)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from orchestrator.controls import UnpairReport, unpair_summary
from orchestrator.recovery import NodeRow
from orchestrator.status import NodeStatus
from orchestrator.traffic import PeerTraffic
from tui.choice import ChoiceScreen
from tui.pane import KeyedTable, Pane
from tui.rows import NODE_COLUMNS, node_detail, node_rows


class NodesPane(Pane):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rows: dict[str, NodeRow] = {}
        self.status: NodeStatus | None = None
        self.traffic: dict[str, PeerTraffic] = {}

    def compose(self) -> ComposeResult:
        yield KeyedTable(NODE_COLUMNS, id="nodes-table")
        with VerticalScroll(id="node-detail-box", classes="detail"):
            yield Static("Loading fingerprints…", id="node-detail")

    def load(self) -> None:
        if not self.busy("nodes"):
            self.call_service(self.service.nodes, then=self.show_nodes, group="nodes",
                              title="Nodes")
        if not self.busy("traffic"):
            self.call_service(self.service.traffic, then=self.show_traffic, group="traffic", title="Traffic")

    def show_nodes(self, rows: list[NodeRow]) -> None:
        self.rows = {r.name: r for r in rows}
        self._redraw()

    def show_traffic(self, traffic: list[PeerTraffic]) -> None:
        self.traffic = {t.name: t for t in traffic}
        self._redraw()

    def show_status(self, status: NodeStatus) -> None:
        """The header's latest status: peers' last seen and folders in the detail."""
        self.status = status
        self._redraw()

    def _redraw(self) -> None:
        table = self.query_one("#nodes-table", KeyedTable)
        peers = {p.name: p for p in self.status.peers} if self.status else {}
        table.show(node_rows(list(self.rows.values()), peers, self.status.node if self.status else None,
                             self.traffic))
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
        detail.update(node_detail(row, self.status, self.traffic.get(row.name)))

    # -- controls ------------------------------------------------------------------------

    def selected_peer(self) -> PeerTraffic | None:
        """The selected row's peer; a notice when the row is this node or not a peer."""
        key = self.query_one("#nodes-table", KeyedTable).selected_key
        peer = self.traffic.get(key) if key else None
        if peer is None:
            self.app.notify(f"{key or 'Nothing'} is not a peer of this node: select a peer's row.",
                            severity="warning", markup=False)
        return peer

    def toggle_pause(self) -> None:
        peer = self.selected_peer()
        if peer is not None:
            self.call_service(self.service.set_paused, peer.name, not peer.paused, then=self._done,
                              group="control", title="Pause" if not peer.paused else "Resume")

    def rescan(self) -> None:
        self.call_service(self.service.rescan, group="control", title="Rescan",
                          then=lambda ids: self._done(f"Syncthing is scanning {', '.join(ids)}." if ids
                                                      else "No twinsync folder to scan (all paused?)."))

    def unpair(self) -> None:
        peer = self.selected_peer()
        if peer is None:
            return
        body = (f"This node stops trusting {peer.name} ({peer.device_id[:7]}): its device and its shares of "
                "twinsync's folders leave this Syncthing, its entry leaves trusted.toml. Steps already "
                f"merged stay. {peer.name} sees this node disconnect; run `twinsync unpair` there too.\n\n"
                "Its recovery folder: keep it (moved to unpaired/ in the node home) or delete it?")

        def chosen(choice: str | None) -> None:
            if choice is not None:
                self.call_service(self.service.unpair, peer.name, keep_recovery=choice == "keep",
                                  then=self._unpaired, group="control", title="Unpair")

        self.app.push_screen(ChoiceScreen(f"Unpair {peer.name}?", body,
                                          [("k", "Unpair, keep its folder", "keep"),
                                           ("d", "Unpair, delete its folder", "delete")]), chosen)

    def _unpaired(self, report: UnpairReport) -> None:
        self._done(unpair_summary(report))

    def _done(self, sentence: str) -> None:
        self.app.notify(sentence, timeout=8, markup=False)
        self.load()
