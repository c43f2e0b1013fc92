"""What every tab shares: a keyed table that survives refreshes, and service calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text
from textual.containers import Container
from textual.widgets import DataTable, TabbedContent, Tabs

from tui.rows import Row
from tui.work import ServiceCalls

if TYPE_CHECKING:
    from tui.service import Service

#: More rows gone than this and `KeyedTable.show` rebuilds the table: DataTable's
#: `remove_row` renumbers every row, ~7 ms each at 10,000 rows, where re-adding and
#: measuring all 10,000 takes ~650 ms.
MAX_REMOVALS = 50


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
        """Show `rows`; returns False when they are what is already shown.

        A refresh changes a few cells of a long table, so only what differs is touched:
        changed cells are updated in place, gone rows removed, new rows appended and put in
        order. Clearing and re-adding every row costs ~1 s at 10,000 rows, mostly
        DataTable measuring every cell of every added row again."""
        if rows == self.shown:
            return False
        keep = self.selected_key
        old = {r.key: r for r in self.shown or ()}
        keys = [r.key for r in rows]
        gone = old.keys() - set(keys)
        if not old or len(gone) > MAX_REMOVALS:
            self._rebuild(rows)
        else:
            for key in gone:
                self.remove_row(key)
            for row in rows:
                before = old.get(row.key)
                if before is None:
                    self.add_row(*row.cells, key=row.key)
                elif before != row:
                    self._update(before, row)
            appended = [k for k in keys if k not in old]
            if [r.key for r in self.shown if r.key not in gone] + appended != keys:
                self._reorder(rows)
        self.shown = rows
        if keep is not None and keep not in gone and self.cursor_row != (at := keys.index(keep)):
            self.move_cursor(row=at, animate=False)
        return True

    def _rebuild(self, rows: list[Row]) -> None:
        self.clear()
        for row in rows:
            self.add_row(*row.cells, key=row.key)

    def _update(self, before: Row, row: Row) -> None:
        """Replace the cells that changed. Column widths only grow, as across `clear()`, so a
        cell is measured only when it is wider than its column: asking DataTable to measure
        a narrower one makes it measure the whole column to see whether it shrinks."""
        for column, was, cell in zip(self.ordered_columns, before.cells, row.cells):
            if was != cell:
                wider = not isinstance(cell, Text) or cell.cell_len > column.content_width
                self.update_cell(row.key, column.key, cell, update_width=wider)

    def _reorder(self, rows: list[Row]) -> None:
        """Put the rows in the order of `rows`. DataTable only appends rows, and its `sort`
        key sees a row's cells, not its key: the cell each row holds in the first column
        (its identity) tells the rows apart, and where it does not the table is rebuilt."""
        first = self.ordered_columns[0].key
        position = {id(self.get_cell(r.key, first)): i for i, r in enumerate(rows)}
        if len(position) < len(rows):
            self._rebuild(rows)
        else:
            self.sort(first, key=lambda cell: position[id(cell)])


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
