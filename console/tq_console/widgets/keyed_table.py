"""``KeyedTable``: a DataTable that follows a changing list of keyed rows cell by cell.

Every table of the console is one of these. ``sync(rows)`` adds new keys, removes gone ones and
calls ``update_cell`` only for cells whose text or style changed, so the cursor, scroll position
and marks survive every refresh (no clear-and-refill). It also owns the k9s habits that belong
to a table: a filter (``/``), Shift+letter sorting, ``space`` marks and export of the visible rows.

Imports nothing from tq; no I/O.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

from tq_console.widgets import _palette

#: Column key of the mark column every table starts with.
MARK_COLUMN = "_mark"


class Cell(Text):
    """A table cell: Rich text plus the value it sorts by (numbers sort as numbers)."""

    __slots__ = ("sort_value",)

    def __init__(
        self, text: str = "", style: str = "", sort: Any = None, justify: str | None = None
    ) -> None:
        super().__init__(text, style=style, justify=justify, no_wrap=True, overflow="ellipsis")  # type: ignore[arg-type]
        self.sort_value: Any = text.lower() if sort is None else sort

    def same_as(self, other: object) -> bool:
        """Whether ``other`` renders and sorts exactly like this cell."""
        return (
            isinstance(other, Cell)
            and self.plain == other.plain
            and str(self.style) == str(other.style)
            and self._spans == other._spans
            and self.sort_value == other.sort_value
        )


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a KeyedTable.

    Attributes:
        key: Column key (also the cell's position in a row).
        label: Header text.
        width: Fixed width in cells; None grows to fit; for a ``flex`` column, the minimum.
        sort_key: The Shift+letter that sorts by this column.
        justify: ``"right"`` for numbers (header and cells).
        flex: Take the width the other columns leave (at most one per table).
    """

    key: str
    label: str
    width: int | None = None
    sort_key: str | None = None
    justify: str = "left"
    flex: bool = False

    def header(self, suffix: str = "") -> Text:
        label = f"{self.label}{suffix}"
        return Text(label, justify="right" if self.justify == "right" else "left")


def _sort_key(value: Any) -> tuple[bool, Any]:
    return (value is None, value)


class KeyedTable(DataTable[Text]):
    """A DataTable kept in step with keyed rows, with filter, sort, marks and export."""

    COLUMNS: ClassVar[Sequence[Column]] = ()

    class Changed(Message):
        """The filter, sort or marks changed (the view redraws its title)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_mark", "Mark", show=False),
        *(
            Binding(letter, f"sort_by('{letter}')", f"Sort by {letter}", show=False)
            for letter in string.ascii_uppercase
        ),
    ]

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self.filter_text = ""
        self.marked: set[str] = set()
        self.sort_column: str | None = None
        self.sort_reverse = False
        self._rows: list[tuple[str, tuple[Cell, ...]]] = []

    def on_mount(self) -> None:
        self.add_column(" ", key=MARK_COLUMN, width=1)
        for column in self.COLUMNS:
            self.add_column(column.header(), key=column.key, width=column.width)

    def on_resize(self) -> None:
        self._fit_flex_column()

    def _fit_flex_column(self) -> None:
        """Give the flex column whatever width the other columns leave."""
        spec = next((column for column in self.COLUMNS if column.flex), None)
        available = self.scrollable_content_region.width
        if spec is None or available <= 0 or spec.key not in self.columns:
            return
        column = self.columns[spec.key]  # type: ignore[index]
        others = sum(c.get_render_width(self) for key, c in self.columns.items() if key != spec.key)
        width = max(spec.width or 8, available - others - 2 * self.cell_padding)
        if column.width == width and not column.auto_width:
            return
        column.width, column.auto_width = width, False
        if self.row_count:  # re-measure through the public API so the scroll size follows
            first = self.ordered_rows[0].key
            self.update_cell(first, spec.key, self.get_cell(first, spec.key), update_width=True)
        self.refresh()

    # -- feeding ---------------------------------------------------------------------------

    def sync(self, rows: Iterable[tuple[str, Sequence[Cell]]]) -> None:
        """Show exactly ``rows`` (minus filtered ones), in their order unless a sort is set."""
        self._rows = [(key, tuple(cells)) for key, cells in rows]
        self._render_rows()

    def _render_rows(self) -> None:
        cursor_key = self.cursor_key
        visible = [(key, cells) for key, cells in self._rows if self._matches(cells)]
        wanted = {key for key, _ in visible}
        self.marked &= {key for key, _ in self._rows}
        for row_key in list(self.rows):
            if row_key.value not in wanted:
                self.remove_row(row_key)
        for position, (key, cells) in enumerate(visible):
            full = (self._mark_cell(key, position), *cells)
            if key in self.rows:
                self._update_row(key, full)
            else:
                self.add_row(*full, key=key)
        self._apply_order()
        self._fit_flex_column()
        if cursor_key is not None and cursor_key in self.rows:
            self.move_cursor(row=self.get_row_index(cursor_key), animate=False)

    def _update_row(self, key: str, cells: Sequence[Cell]) -> None:
        current = self.get_row(key)
        for column, old, new in zip(self.ordered_columns, current, cells, strict=False):
            if not new.same_as(old):
                self.update_cell(key, column.key, new, update_width=len(new) > len(old))

    def _mark_cell(self, key: str, position: int) -> Cell:
        if key in self.marked:
            return Cell("●", _palette.MARK, sort=position)
        return Cell(" ", sort=position)

    def _matches(self, cells: Sequence[Cell]) -> bool:
        if not self.filter_text:
            return True
        needle = self.filter_text.lower()
        return any(needle in cell.plain.lower() for cell in cells)

    def _apply_order(self) -> None:
        column = self.sort_column or MARK_COLUMN
        reverse = self.sort_reverse if self.sort_column else False
        current = [row.key for row in self.ordered_rows]

        def value(row_key: Any) -> tuple[bool, Any]:
            cell = self.get_cell(row_key, column)
            return _sort_key(getattr(cell, "sort_value", None))

        if current != sorted(current, key=value, reverse=reverse):
            self.sort(column, key=lambda cell: _sort_key(cell.sort_value), reverse=reverse)

    # -- reading ---------------------------------------------------------------------------

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor, or None when the table is empty."""
        if not self.row_count or not self.is_valid_row_index(self.cursor_row):
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return row_key.value

    def selected_keys(self) -> list[str]:
        """The marked rows' keys in table order, or else the cursor row's key."""
        if self.marked:
            return [str(row.key.value) for row in self.ordered_rows if row.key.value in self.marked]
        key = self.cursor_key
        return [] if key is None else [key]

    def export(self) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
        """The headers and the visible rows as plain text, in display order."""
        headers = tuple(column.label for column in self.COLUMNS)
        rows = tuple(
            tuple(cell.plain for cell in self.get_row(row.key)[1:]) for row in self.ordered_rows
        )
        return headers, rows

    @property
    def sort_description(self) -> str:
        """``"name ▲"`` for the active sort, or "" when rows keep their natural order."""
        for column in self.COLUMNS:
            if column.key == self.sort_column:
                return f"{column.label.lower()} {'▼' if self.sort_reverse else '▲'}"
        return ""

    # -- user actions ----------------------------------------------------------------------

    def set_filter(self, text: str) -> None:
        """Show only rows with a cell containing ``text`` (case-insensitive); "" shows all."""
        self.filter_text = text
        self._render_rows()
        self.post_message(self.Changed())

    def clear_marks(self) -> None:
        self.marked.clear()
        self._render_rows()
        self.post_message(self.Changed())

    def action_toggle_mark(self) -> None:
        key = self.cursor_key
        if key is None:
            return
        self.marked ^= {key}
        self._render_rows()
        self.action_cursor_down()
        self.post_message(self.Changed())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "sort_by":
            return any(column.sort_key == parameters[0] for column in self.COLUMNS)
        return True

    def action_sort_by(self, letter: str) -> None:
        """Sort by the column of this Shift+letter; again to reverse, a third time to reset."""
        column = next((c for c in self.COLUMNS if c.sort_key == letter), None)
        if column is None:
            return
        if self.sort_column != column.key:
            self.sort_column, self.sort_reverse = column.key, False
        elif not self.sort_reverse:
            self.sort_reverse = True
        else:
            self.sort_column, self.sort_reverse = None, False
        self._relabel()
        self._render_rows()
        self.post_message(self.Changed())

    def _relabel(self) -> None:
        for spec in self.COLUMNS:
            suffix = ""
            if spec.key == self.sort_column:
                suffix = " ▼" if self.sort_reverse else " ▲"
            column = self.columns[spec.key]  # type: ignore[index]
            column.label = spec.header(suffix)
            column.content_width = max(column.content_width, len(column.label))
        self.refresh()
