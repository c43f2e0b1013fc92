"""What every tab shares: a keyed table that survives refreshes, and service calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from textual.containers import Container
from textual.widgets import DataTable, TabbedContent, Tabs

from tui.rows import Row
from tui.work import ServiceCalls

if TYPE_CHECKING:
    from tui.service import Service


class KeyedTable(DataTable):
    """A row-cursor table whose rows have stable keys: a refresh that changes nothing
    redraws nothing, and the cursor stays on the same key when rows come and go."""

    def __init__(self, columns: Sequence[str], **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._columns = tuple(columns)
        self.shown: list[Row] | None = None

    def on_mount(self) -> None:
        self.add_columns(*self._columns)

    @property
    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return row_key.value

    def show(self, rows: list[Row]) -> bool:
        """Show `rows`; returns False when they are what is already shown."""
        if rows == self.shown:
            return False
        keep = self.selected_key
        self.clear()
        for row in rows:
            self.add_row(*row.cells, key=row.key)
        self.shown = rows
        keys = [r.key for r in rows]
        if keep in keys:
            self.move_cursor(row=keys.index(keep), animate=False)
        return True


class Pane(ServiceCalls, Container):
    """One tab's content. `load()` asks the service for fresh data in a worker."""

    @property
    def service(self) -> Service:
        return self.app.service  # type: ignore[attr-defined]

    def load(self) -> None:
        """Fetch and show fresh data; skipped while the previous fetch still runs."""

    def focus_main(self) -> None:
        for table in self.query(KeyedTable):
            table.focus()
            return
        # nothing to select here: focus the tab bar, so focus never stays in a hidden tab
        self.query_ancestor(TabbedContent).query_one(Tabs).focus()

    def on_unmount(self) -> None:
        self.workers.cancel_node(self)
