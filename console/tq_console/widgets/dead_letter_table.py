"""``DeadLetterTable``: entries of ``tq.dead``, newest first.

Fed by ``update``; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from tq.worker.snapshot import DeadLetter
from tq_console import format as fmt
from tq_console.widgets import _palette
from tq_console.widgets.keyed_table import Cell, Column, KeyedTable


class DeadLetterTable(KeyedTable):
    """Dead letters: when, queue, reason, task, size and a preview of the raw message."""

    COLUMNS = (
        Column("time", "When", 10, sort_key="W"),
        Column("queue", "Queue", 9, sort_key="Q"),
        Column("reason", "Reason", 24, sort_key="R"),
        Column("name", "Task", 20, sort_key="N"),
        Column("task_id", "Task ID", 8, sort_key="I"),
        Column("size", "Size", 9, sort_key="S", justify="right"),
        Column("preview", "Preview", 12, flex=True),
    )

    def update(self, dead_letters: Sequence[DeadLetter], now: float) -> None:
        """Show ``dead_letters``; ages are measured at ``now``."""
        ordered = sorted(dead_letters, key=lambda entry: entry.time, reverse=True)
        self.sync(
            (
                entry.id,
                [
                    Cell(fmt.ago(entry.time, now), sort=-entry.time),
                    Cell(entry.queue),
                    Cell(entry.reason, _palette.CRIT),
                    Cell(entry.task_name or "?", "bold"),
                    Cell(fmt.short_id(entry.task_id), _palette.DIM),
                    Cell(fmt.size(entry.raw_size), sort=entry.raw_size, justify="right"),
                    Cell(entry.raw_preview.replace("\n", " "), _palette.DIM),
                ],
            )
            for entry in ordered
        )
