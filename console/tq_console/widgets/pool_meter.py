"""``PoolMeter``: the pool's children as htop-style CPU meters with their current task.

Fed by ``update``; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

from tq.worker.snapshot import ChildInfo
from tq_console import format as fmt
from tq_console.widgets import _palette

# Cells inside the meter's brackets.
_METER_WIDTH = 12


class PoolMeter(Static):
    """A summary line (busy / idle / size) and one meter line per child."""

    def update(self, children: Sequence[ChildInfo], concurrency: int, recycled: int = 0) -> None:  # type: ignore[override]
        """Show ``children`` of a pool configured for ``concurrency`` processes."""
        busy = sum(child.state == "busy" for child in children)
        text = Text()
        text.append(f"{busy}", f"bold {_palette.OK}")
        text.append(f"/{concurrency} busy", _palette.TEXT)
        text.append(f"   {len(children) - busy} idle", _palette.DIM)
        text.append(f"   {recycled} recycled", _palette.DIM)
        for child in children:
            style, glyph = _palette.CHILD_STATE.get(child.state, ("", "?"))
            filled = round(min(1.0, child.cpu_percent / 100) * _METER_WIDTH)
            text.append(f"\n{child.index:>2} ", _palette.DIM)
            text.append("[", "bold")
            text.append("|" * filled, _palette.CRIT if child.cpu_percent > 90 else _palette.OK)
            text.append(" " * (_METER_WIDTH - filled))
            text.append(f"{child.cpu_percent:5.1f}%", _palette.DIM)
            text.append("]", "bold")
            text.append(f" {glyph} ", style)
            if child.task_name:
                text.append(fmt.truncate(child.task_name, 20), "bold")
                text.append(f" {fmt.duration(child.task_runtime)}", _palette.DIM)
            else:
                text.append(child.state, style)
        super().update(text)
