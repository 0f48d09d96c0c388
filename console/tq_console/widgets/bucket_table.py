"""``BucketTable``: the per-task token buckets that enforce rate limits.

Fed by ``update``; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from tq.worker.snapshot import BucketInfo
from tq_console import format as fmt
from tq_console.widgets import _palette
from tq_console.widgets.keyed_table import Cell, Column, KeyedTable

# Width of the token meter.
_METER_WIDTH = 20


class BucketTable(KeyedTable):
    """Buckets: task, configured rate, tokens left (as a meter) and tasks waiting for a token."""

    COLUMNS = (
        Column("name", "Task", 16, sort_key="N", flex=True),
        Column("rate", "Rate limit", 12, sort_key="R"),
        Column("tokens", "Tokens", 36, sort_key="T"),
        Column("waiting", "Waiting", 9, sort_key="W", justify="right"),
    )

    def update(self, buckets: Sequence[BucketInfo]) -> None:
        """Show ``buckets``, one row per task name."""
        rows = []
        for bucket in buckets:
            fraction = bucket.tokens / bucket.capacity if bucket.capacity else 0.0
            style = (
                _palette.CRIT
                if fraction < 0.1
                else _palette.WARN
                if fraction < 0.5
                else _palette.OK
            )
            meter = Cell(sort=fraction)
            meter.append(fmt.bar(fraction, _METER_WIDTH), style)
            meter.append(f" {bucket.tokens:.1f} / {bucket.capacity:g}", _palette.DIM)
            waiting_style = f"bold {_palette.WARN}" if bucket.waiting else _palette.DIM
            rows.append(
                (
                    bucket.task_name,
                    [
                        Cell(bucket.task_name, "bold"),
                        Cell(bucket.rate or "none", _palette.INFO),
                        meter,
                        Cell(
                            fmt.count(bucket.waiting),
                            waiting_style,
                            sort=bucket.waiting,
                            justify="right",
                        ),
                    ],
                )
            )
        self.sync(rows)
