"""``BeatTable``: the beat schedule's entries with their next and last runs.

Fed by ``update``; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from tq.worker.snapshot import BeatEntryInfo
from tq_console import format as fmt
from tq_console.widgets import _palette
from tq_console.widgets.keyed_table import Cell, Column, KeyedTable


class BeatTable(KeyedTable):
    """Beat entries: name, task, schedule, next run, last run, run count and last result."""

    COLUMNS = (
        Column("name", "Entry", 16, sort_key="N"),
        Column("task", "Task", 18, sort_key="T"),
        Column("schedule", "Schedule", 20),
        Column("next", "Next run", 10, sort_key="X"),
        Column("last", "Last run", 10, sort_key="L"),
        Column("runs", "Runs", 6, sort_key="R", justify="right"),
        Column("result", "Last result", 12, flex=True),
    )

    def update(self, entries: Sequence[BeatEntryInfo], now: float) -> None:
        """Show ``entries``, soonest next run first; times are measured at ``now``."""
        ordered = sorted(entries, key=lambda e: (e.next_run is None, e.next_run or 0.0, e.name))
        self.sync(
            (
                entry.name,
                [
                    Cell(entry.name, "bold"),
                    Cell(entry.task),
                    Cell(entry.schedule, _palette.INFO),
                    Cell(fmt.until(entry.next_run, now), _palette.MAGENTA, sort=entry.next_run),
                    Cell(fmt.ago(entry.last_run, now), _palette.DIM, sort=entry.last_run),
                    Cell(
                        fmt.count(entry.total_run_count),
                        sort=entry.total_run_count,
                        justify="right",
                    ),
                    Cell(entry.last_result or "", _result_style(entry.last_result)),
                ],
            )
            for entry in ordered
        )


def _result_style(result: str | None) -> str:
    if result is None:
        return _palette.DIM
    return _palette.CRIT if "error" in result.lower() or "fail" in result.lower() else _palette.OK
