"""``EventLog``: the live log of the worker's event ring, oldest at the top, following the tail.

Events are keyed by time, type and task, so each arrives once and scrolls in at the bottom; when
the cursor sits on the last row the log keeps following new events. Fed by ``update``; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from tq.worker.snapshot import EventRecord
from tq_console import format as fmt
from tq_console.widgets import _palette
from tq_console.widgets.keyed_table import Cell, Column, KeyedTable


def event_key(event: EventRecord) -> str:
    """A stable key for one event of the ring."""
    return f"{event.time:.6f}:{event.type}:{event.task_id or ''}:{event.hostname}"


class EventLog(KeyedTable):
    """Events: time, type, host, task, task id and detail."""

    COLUMNS = (
        Column("time", "Time", 12, sort_key="T"),
        Column("type", "Event", 16, sort_key="E"),
        Column("host", "Host", 14, sort_key="H"),
        Column("name", "Task", 22, sort_key="N"),
        Column("task_id", "Task ID", 8),
        Column("detail", "Detail", 16, flex=True),
    )

    def update(self, events: Sequence[EventRecord]) -> None:
        """Show the ring ``events`` (any order; shown by time)."""
        following = self.row_count == 0 or self.cursor_row >= self.row_count - 1
        ordered = sorted(events, key=lambda event: event.time)
        self.sync(
            (
                event_key(event),
                [
                    Cell(
                        f"{fmt.clock(event.time)}.{int(event.time * 1000) % 1000:03d}",
                        _palette.DIM,
                        sort=event.time,
                    ),
                    Cell(event.type, _palette.event_style(event.type)),
                    Cell(event.hostname, _palette.DIM),
                    Cell(event.task_name or "", "bold"),
                    Cell(fmt.short_id(event.task_id) if event.task_id else "", _palette.DIM),
                    Cell(event.detail),
                ],
            )
            for event in ordered
        )
        if following and self.row_count and not self.sort_column:
            self.move_cursor(row=self.row_count - 1, animate=False)
