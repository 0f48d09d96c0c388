"""``Throughput``: a labelled sparkline of a per-second rate with its current and peak values.

Fed by ``update``; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Sparkline, Static

from tq_console import format as fmt
from tq_console.widgets import _palette


class Throughput(Widget):
    """A rate over time: a title line (label, now, peak, average) above a sparkline.

    Args:
        label: What is counted, e.g. ``"Finished"``.
        style: Rich style of the current value.
    """

    DEFAULT_CSS = """
    Throughput { height: auto; }
    Throughput > .throughput--title { height: 1; }
    Throughput > Sparkline { height: 3; margin: 0 0 0 0; }
    """

    def __init__(self, label: str, style: str = _palette.OK, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.label = label
        self.value_style = style

    def compose(self) -> ComposeResult:
        yield Static(self.label, classes="throughput--title")
        yield Sparkline([], summary_function=max)

    def update(self, history: Sequence[float], current: float) -> None:
        """Show the samples ``history`` (oldest first) and the ``current`` rate."""
        title = Text.assemble(
            (self.label, "bold"),
            "  ",
            (fmt.rate(current), f"bold {self.value_style}"),
        )
        if history:
            average = sum(history) / len(history)
            title.append(
                f"   peak {fmt.rate(max(history))}   avg {fmt.rate(average)}", _palette.DIM
            )
            title.append(f"   last {len(history)}s", _palette.DIM)
        self.query_one(".throughput--title", Static).update(title)
        self.query_one(Sparkline).data = list(history) or [0.0]
