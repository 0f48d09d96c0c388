"""``ChildrenTable``: the pool's child processes, htop style.

PID, state, the task each runs and for how long, CPU, RSS, tasks done and uptime.
Fed by ``update``; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from tq.worker.snapshot import ChildInfo
from tq_console import format as fmt
from tq_console.widgets import _palette
from tq_console.widgets.keyed_table import Cell, Column, KeyedTable

# Width of the CPU meter.
_CPU_WIDTH = 6


class ChildrenTable(KeyedTable):
    """One row per pool child."""

    COLUMNS = (
        Column("index", "#", 3, sort_key="X", justify="right"),
        Column("pid", "PID", 8, sort_key="P", justify="right"),
        Column("state", "State", 10, sort_key="S"),
        Column("task", "Current task", 16, sort_key="N", flex=True),
        Column("task_id", "Task ID", 8),
        Column("runtime", "Runtime", 9, sort_key="R", justify="right"),
        Column("cpu", "CPU", 13, sort_key="C"),
        Column("rss", "RSS", 10, sort_key="M", justify="right"),
        Column("done", "Done", 8, sort_key="D", justify="right"),
        Column("uptime", "Up", 8, sort_key="U", justify="right"),
    )

    def update(self, children: Sequence[ChildInfo], now: float) -> None:
        """Show ``children``; uptimes are measured at ``now``."""
        self.sync((str(child.index), self._cells(child, now)) for child in children)

    @staticmethod
    def _cells(child: ChildInfo, now: float) -> list[Cell]:
        style, glyph = _palette.CHILD_STATE.get(child.state, ("", "?"))
        cpu = Cell(sort=child.cpu_percent)
        cpu_style = _palette.CRIT if child.cpu_percent > 90 else _palette.OK
        cpu.append(fmt.bar(child.cpu_percent / 100, _CPU_WIDTH), cpu_style)
        cpu.append(f" {child.cpu_percent:5.1f}%", "")
        runtime_style = "bold" if (child.task_runtime or 0) < 60 else f"bold {_palette.WARN}"
        return [
            Cell(str(child.index), _palette.DIM, sort=child.index, justify="right"),
            Cell(str(child.pid), sort=child.pid, justify="right"),
            Cell(f"{glyph} {child.state}", style, sort=child.state),
            Cell(child.task_name or "", "bold"),
            Cell(fmt.short_id(child.task_id) if child.task_id else "", _palette.DIM),
            Cell(
                fmt.duration(child.task_runtime) if child.task_runtime is not None else "",
                runtime_style,
                sort=child.task_runtime or 0.0,
                justify="right",
            ),
            cpu,
            Cell(fmt.size(child.rss), sort=child.rss, justify="right"),
            Cell(fmt.count(child.tasks_done), sort=child.tasks_done, justify="right"),
            Cell(
                fmt.duration(now - child.started_at),
                _palette.DIM,
                sort=child.started_at,
                justify="right",
            ),
        ]
