"""``QueueBars``: queue depths as horizontal bars, deepest first, for the overview.

Fed by ``update``; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

from tq.worker.snapshot import QueueInfo
from tq_console import format as fmt
from tq_console.widgets import _palette

#: Queues shown at most; the rest are summed on one line.
MAX_QUEUES = 6
# Cells for the bar itself.
_BAR_WIDTH = 22


class QueueBars(Static):
    """One line per queue: name, a bar scaled to the deepest queue, ready and unacked counts."""

    def update(self, queues: Sequence[QueueInfo]) -> None:  # type: ignore[override]
        """Show ``queues`` (any order)."""
        ordered = sorted(queues, key=lambda q: (-q.ready, q.name))
        deepest = max((q.ready for q in ordered), default=0) or 1
        width = max((len(q.name) for q in ordered[:MAX_QUEUES]), default=5)
        text = Text()
        for queue in ordered[:MAX_QUEUES]:
            style = _palette.INFO if queue.consuming else _palette.WARN
            if text:
                text.append("\n")
            text.append(queue.name.ljust(width), "bold" if queue.consuming else _palette.WARN)
            text.append(" ")
            text.append(fmt.bar(queue.ready / deepest, _BAR_WIDTH), style)
            text.append(f" {fmt.count(queue.ready):>7}", "bold")
            if queue.unacked:
                text.append(f"  +{fmt.count(queue.unacked)} unacked", _palette.DIM)
            if not queue.consuming:
                text.append("  paused", f"bold {_palette.WARN}")
        rest = ordered[MAX_QUEUES:]
        if rest:
            text.append(
                f"\n… {len(rest)} more, {fmt.count(sum(q.ready for q in rest))} ready", _palette.DIM
            )
        if not ordered:
            text.append("no queues consumed", _palette.DIM)
        super().update(text)
