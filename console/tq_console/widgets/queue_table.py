"""``QueueTable``: one row per consumed queue with its length per priority and unacked state.

The oldest unacked age is shown against the visibility timeout and turns amber, then red, as
the sweep that would restore (and re-run) the message gets close. Fed by ``update``; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from tq.worker.snapshot import QueueInfo
from tq_console import format as fmt
from tq_console.widgets import _palette
from tq_console.widgets.keyed_table import Cell, Column, KeyedTable

#: The priority steps shown as columns (kombu's Redis default); others count in the step below.
PRIORITY_STEPS = (0, 3, 6, 9)
# Width of the little bar drawn beside the oldest unacked age.
_AGE_BAR_WIDTH = 8


def priority_counts(lengths: Sequence[tuple[int, int]]) -> dict[int, int]:
    """Ready messages per shown priority step; a priority between steps counts in the one below."""
    counts = dict.fromkeys(PRIORITY_STEPS, 0)
    for priority, number in lengths:
        step = max((s for s in PRIORITY_STEPS if s <= priority), default=PRIORITY_STEPS[0])
        counts[step] += number
    return counts


class QueueTable(KeyedTable):
    """Queues: state, ready total and per priority, unacked count and oldest unacked age."""

    COLUMNS = (
        Column("name", "Queue", 12, sort_key="N", flex=True),
        Column("state", "State", 11, sort_key="S"),
        Column("ready", "Ready", 9, sort_key="R", justify="right"),
        *(Column(f"p{step}", f"P{step}", 6, justify="right") for step in PRIORITY_STEPS),
        Column("unacked", "Unacked", 8, sort_key="U", justify="right"),
        Column("oldest", "Oldest unacked", 26, sort_key="O"),
    )

    def update(self, queues: Sequence[QueueInfo], visibility_timeout: float) -> None:
        """Show ``queues``; ages are judged against ``visibility_timeout`` seconds."""
        self.sync((queue.name, self._cells(queue, visibility_timeout)) for queue in queues)

    @staticmethod
    def _cells(queue: QueueInfo, visibility_timeout: float) -> list[Cell]:
        if queue.consuming:
            state = Cell("● consuming", _palette.OK, sort=0)
        else:
            state = Cell("‖ paused", f"bold {_palette.WARN}", sort=1)
        counts = priority_counts(queue.lengths)
        ready_style = "bold" if queue.ready else _palette.DIM
        cells = [
            Cell(queue.name, "bold"),
            state,
            Cell(fmt.count(queue.ready), ready_style, sort=queue.ready, justify="right"),
        ]
        for step in PRIORITY_STEPS:
            number = counts[step]
            cells.append(
                Cell(
                    fmt.count(number), "" if number else _palette.DIM, sort=number, justify="right"
                )
            )
        cells.append(
            Cell(
                fmt.count(queue.unacked),
                "" if queue.unacked else _palette.DIM,
                sort=queue.unacked,
                justify="right",
            )
        )
        cells.append(_oldest_cell(queue.oldest_unacked_age, visibility_timeout))
        return cells


def _oldest_cell(age: float | None, visibility_timeout: float) -> Cell:
    if age is None:
        return Cell(fmt.NONE, _palette.DIM, sort=-1.0)
    style = _palette.LEVEL[fmt.age_level(age, visibility_timeout)]
    fraction = age / visibility_timeout if visibility_timeout > 0 else 0.0
    cell = Cell(sort=age)
    cell.append(fmt.bar(fraction, _AGE_BAR_WIDTH), style)
    cell.append(f" {fmt.duration(age)}", style)
    cell.append(f" / {fmt.duration(visibility_timeout)}", _palette.DIM)
    return cell
