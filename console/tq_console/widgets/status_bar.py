"""``StatusBar``: the top line of every view, naming the worker and its health.

Shows the worker's hostname and state, pool and concurrency, broker latency, whether updates are
live or paused, and the snapshot's time. Fed by ``update``; no I/O.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tq.worker.snapshot import Snapshot
from tq_console import format as fmt
from tq_console.widgets import _palette

_STATE_STYLE = {
    "running": _palette.OK,
    "starting": _palette.INFO,
    "stopping": _palette.WARN,
    "stopped": _palette.CRIT,
}


class StatusBar(Static):
    """``tq ▸ celery@host ● running │ prefork x4 │ broker 0.42 ms │ ⟳ live 2s │ 12:00:08``."""

    def update(  # type: ignore[override]
        self,
        snapshot: Snapshot | None,
        *,
        live: bool = True,
        interval: float = 2.0,
        read_only: bool = False,
        title: str = "tq",
    ) -> None:
        """Describe ``snapshot`` (None before the first one arrives)."""
        text = Text()
        text.append(f" {title} ", "bold reverse")
        text.append(" ▸ ", _palette.DIM)
        if snapshot is None:
            text.append("connecting…", _palette.DIM)
            super().update(text)
            return
        text.append(snapshot.hostname, "bold")
        text.append(f"  ● {snapshot.state}", _STATE_STYLE.get(snapshot.state, ""))
        text.append("  │  ", _palette.DIM)
        text.append(f"{snapshot.pool} {fmt.TIMES}{snapshot.concurrency}")
        text.append(f"  prefetch {snapshot.prefetch_limit}", _palette.DIM)
        text.append("  │  broker ", _palette.DIM)
        if snapshot.broker.ok:
            text.append(fmt.latency(snapshot.broker.latency_ms), _palette.OK)
        else:
            text.append("down", f"bold {_palette.CRIT}")
        text.append("  │  ", _palette.DIM)
        if live:
            text.append(f"⟳ live {interval:g}s", _palette.INFO)
        else:
            text.append("‖ PAUSED", f"bold {_palette.WARN}")
        if read_only:
            text.append("  read-only", f"bold {_palette.MAGENTA}")
        text.append(f"  │  {fmt.timestamp(snapshot.taken_at)}", _palette.DIM)
        super().update(text)
