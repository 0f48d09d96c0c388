"""``EventTail``: the last few events as coloured lines, for the overview.

Fed by ``update``; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

from tq.worker.snapshot import EventRecord
from tq_console import format as fmt
from tq_console.widgets import _palette

#: Events shown at most, newest last.
MAX_EVENTS = 12


class EventTail(Static):
    """``09:29:58  task-succeeded   images.resize   1a2b3c4d  runtime 1.42s`` per line."""

    def update(self, events: Sequence[EventRecord], limit: int = MAX_EVENTS) -> None:  # type: ignore[override]
        """Show the newest ``limit`` of ``events`` (any order), oldest first."""
        newest = sorted(events, key=lambda event: event.time)[-limit:]
        text = Text(no_wrap=True, overflow="ellipsis")
        for event in newest:
            if text:
                text.append("\n")
            text.append(f"{fmt.clock(event.time)}  ", _palette.DIM)
            text.append(f"{event.type:<17}", _palette.event_style(event.type))
            text.append(f"{fmt.truncate(event.task_name or '', 24):<25}", "bold")
            text.append(f"{fmt.short_id(event.task_id) if event.task_id else '':<10}", _palette.DIM)
            text.append(event.detail, _palette.TEXT)
        if not newest:
            text.append("no events yet", _palette.DIM)
        super().update(text)
