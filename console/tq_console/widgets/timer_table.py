"""``TimerTable``: ETA, countdown and retry entries held in memory until due.

Due times read as people say them ("in 3 min"), through ``format.until``. Fed by ``update``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tq.worker.snapshot import TimerEntry
from tq_console import format as fmt
from tq_console.widgets import _palette
from tq_console.widgets.keyed_table import Cell, Column, KeyedTable

_KIND_STYLE = {"eta": _palette.MAGENTA, "countdown": _palette.BLUE, "retry": _palette.WARN}


class TimerTable(KeyedTable):
    """Timer entries, soonest first: when, kind, task and due clock time."""

    COLUMNS = (
        Column("due", "Due", 14, sort_key="D"),
        Column("kind", "Kind", 10, sort_key="K"),
        Column("name", "Task", 16, sort_key="N", flex=True),
        Column("task_id", "Task ID", 10, sort_key="I"),
        Column("at", "At", 20),
    )

    def update(self, timers: Sequence[TimerEntry], now: float) -> None:
        """Show ``timers`` as seen at ``now`` (the snapshot's time)."""
        ordered = sorted(timers, key=lambda entry: entry.due)
        self.sync(
            (
                f"{entry.task_id}:{entry.kind}",
                [
                    Cell(
                        fmt.until(entry.due, now),
                        "bold" if entry.due - now < 60 else "",
                        sort=entry.due,
                    ),
                    Cell(entry.kind, _KIND_STYLE.get(entry.kind, "")),
                    Cell(entry.task_name, "bold"),
                    Cell(fmt.short_id(entry.task_id), _palette.DIM, sort=entry.task_id),
                    Cell(fmt.timestamp(entry.due), sort=entry.due),
                ],
            )
            for entry in ordered
        )
