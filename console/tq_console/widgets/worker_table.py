"""``WorkerTable``: the cluster's nodes as their heartbeats describe them.

Fed by ``update``; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from tq.worker.snapshot import WorkerInfo
from tq_console import format as fmt
from tq_console.widgets import _palette
from tq_console.widgets.keyed_table import Cell, Column, KeyedTable


class WorkerTable(KeyedTable):
    """Workers: hostname, status, last heartbeat, active, processed, load, pool, software."""

    COLUMNS = (
        Column("hostname", "Hostname", 14, sort_key="H", flex=True),
        Column("status", "Status", 10, sort_key="S"),
        Column("heartbeat", "Heartbeat", 12, sort_key="B"),
        Column("active", "Active", 7, sort_key="A", justify="right"),
        Column("processed", "Processed", 11, sort_key="P", justify="right"),
        Column("load", "Load avg", 16, sort_key="L"),
        Column("pool", "Pool", 5, justify="right"),
        Column("software", "Software", 18, sort_key="W"),
    )

    def update(self, workers: Sequence[WorkerInfo], now: float) -> None:
        """Show ``workers``, online ones first; heartbeat ages are measured at ``now``."""
        rows = []
        for worker in sorted(workers, key=lambda w: (not w.online, w.hostname)):
            status = (
                Cell("● online", _palette.OK, sort=0)
                if worker.online
                else Cell("○ offline", _palette.CRIT, sort=1)
            )
            load = " ".join(f"{value:.2f}" for value in worker.loadavg)
            rows.append(
                (
                    worker.hostname,
                    [
                        Cell(worker.hostname, "bold"),
                        status,
                        Cell(
                            fmt.ago(worker.last_heartbeat, now),
                            "" if worker.online else _palette.DIM,
                            sort=-worker.last_heartbeat,
                        ),
                        Cell(
                            str(worker.active),
                            "bold" if worker.active else _palette.DIM,
                            sort=worker.active,
                            justify="right",
                        ),
                        Cell(fmt.count(worker.processed), sort=worker.processed, justify="right"),
                        Cell(load, sort=worker.loadavg[0] if worker.loadavg else 0.0),
                        Cell(
                            str(worker.pool_size) if worker.pool_size is not None else fmt.NONE,
                            justify="right",
                        ),
                        Cell(f"{worker.sw_ident} {worker.sw_ver}", _palette.DIM),
                    ],
                )
            )
        self.sync(rows)
