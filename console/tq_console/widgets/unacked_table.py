"""``UnackedTable``: deliveries held in the unacked hash, with their age and restore countdown.

Fed by ``update``; no I/O.
"""

from __future__ import annotations

from tq.worker.snapshot import UnackedInfo
from tq_console import format as fmt
from tq_console.widgets import _palette
from tq_console.widgets.keyed_table import Cell, Column, KeyedTable


class UnackedTable(KeyedTable):
    """Unacked deliveries: tag, task, queue, age, time until the visibility sweep restores it."""

    COLUMNS = (
        Column("tag", "Delivery tag", 14, sort_key="D"),
        Column("task_id", "Task ID", 10, sort_key="I"),
        Column("name", "Task", 16, sort_key="N", flex=True),
        Column("queue", "Queue", 10, sort_key="Q"),
        Column("age", "Age", 9, sort_key="A", justify="right"),
        Column("restore", "Restored", 16, sort_key="R"),
        Column("holder", "Held by", 11, sort_key="H"),
    )

    def update(self, unacked: UnackedInfo) -> None:
        """Show the entries of ``unacked`` (oldest first, as the snapshot orders them)."""
        timeout = unacked.visibility_timeout
        rows = []
        for entry in unacked.entries:
            level = fmt.age_level(entry.age, timeout)
            if entry.restore_in < 0:
                restore = Cell(f"overdue {fmt.duration(-entry.restore_in)}", _palette.LEVEL["crit"])
            else:
                restore = Cell(f"in {fmt.duration(entry.restore_in)}", _palette.LEVEL[level])
            restore.sort_value = entry.restore_in
            holder = (
                Cell("this worker", _palette.OK) if entry.held_here else Cell("other", _palette.DIM)
            )
            rows.append(
                (
                    entry.delivery_tag,
                    [
                        Cell(fmt.truncate(entry.delivery_tag, 14), _palette.DIM),
                        Cell(fmt.short_id(entry.task_id)),
                        Cell(entry.task_name or "?", "bold"),
                        Cell(entry.queue),
                        Cell(
                            fmt.duration(entry.age),
                            _palette.LEVEL[level],
                            sort=entry.age,
                            justify="right",
                        ),
                        restore,
                        holder,
                    ],
                )
            )
        self.sync(rows)
