"""KeyedTable.show changes only what differs; the table must still end up holding exactly
the rows it was given, in their order, with the cursor on the same key."""

from __future__ import annotations

import asyncio

from rich.text import Text
from textual.app import App, ComposeResult

from tui.pane import MAX_REMOVALS, KeyedTable
from tui.rows import Row


class _TableApp(App):
    def compose(self) -> ComposeResult:
        yield KeyedTable(("name", "value"))


def _rows(*pairs: tuple[str, str]) -> list[Row]:
    return [Row(k, (Text(k), Text(v))) for k, v in pairs]


def _held(table: KeyedTable) -> list[tuple[str, str, str]]:
    return [(row.key.value, *(c.plain for c in table.get_row(row.key))) for row in table.ordered_rows]


def test_show_updates_adds_removes_and_reorders_rows_in_place():
    same = Text("shared")
    steps = [
        _rows(("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")),
        _rows(("a", "1"), ("b", "two, and wider"), ("c", "3"), ("d", "4")),  # a cell changes
        _rows(("new", "0"), ("a", "1"), ("b", "2"), ("d", "4")),  # c gone, one more on top
        _rows(("d", "4"), ("b", "2"), ("a", "1"), ("new", "0")),  # same rows, reversed
        _rows(*((str(i), "x") for i in range(MAX_REMOVALS + 1))),  # 4 gone, 51 new
        [Row("x", (same, Text("1"))), Row("y", (same, Text("2")))],  # more than MAX_REMOVALS gone
        [Row("y", (same, Text("2"))), Row("x", (same, Text("1")))],  # reordered, cells alike
        [],
    ]

    async def main():
        app = _TableApp()
        async with app.run_test() as pilot:
            table = app.query_one(KeyedTable)
            for i, rows in enumerate(steps):
                if i == 2:
                    table.move_cursor(row=3)  # on "d"
                assert table.show(rows)
                assert not table.show(list(rows))
                await pilot.pause()
                assert _held(table) == [(r.key, *(c.plain for c in r.cells)) for r in rows]
                if i in (2, 3):
                    assert table.selected_key == "d"
            assert table.columns[table.ordered_columns[1].key].content_width >= len("two, and wider")

    asyncio.run(main())
