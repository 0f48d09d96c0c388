"""``Stat``: one labelled number, like a counter tile on a dashboard.

Fed by ``update``; no I/O.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class Stat(Static):
    """A label over a value, e.g. ``Failed`` over ``311``.

    Args:
        label: The caption.
        style: Rich style of the value.
    """

    DEFAULT_CSS = """
    Stat { height: 2; width: 1fr; }
    """

    def __init__(self, label: str, style: str = "bold", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.label = label
        self.value_style = style
        self.value = ""

    def update(self, value: object = "") -> None:  # type: ignore[override]
        """Show ``value`` (already formatted) under the label."""
        self.value = str(value)
        super().update(Text.assemble((self.label, "dim"), "\n", (self.value, self.value_style)))
