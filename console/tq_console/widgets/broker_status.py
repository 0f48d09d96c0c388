"""``BrokerStatus``: broker reachability and latency, and the unacked set at a glance.

Fed by ``update``; no I/O.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tq.worker.snapshot import BrokerHealth, UnackedInfo
from tq_console import format as fmt
from tq_console.widgets import _palette


class BrokerStatus(Static):
    """Broker URL, health, latency; unacked count and oldest age against the visibility timeout."""

    def update(self, broker: BrokerHealth, unacked: UnackedInfo | None = None) -> None:  # type: ignore[override]
        """Show ``broker`` health and, when given, the ``unacked`` summary."""
        text = Text()
        if broker.ok:
            text.append("● reachable", f"bold {_palette.OK}")
        else:
            text.append("✘ unreachable", f"bold {_palette.CRIT}")
        text.append(f"   latency {fmt.latency(broker.latency_ms)}", _palette.TEXT)
        text.append(f"\n{broker.url or 'broker'}", _palette.DIM)
        if broker.error:
            text.append(f"\n{broker.error}", _palette.CRIT)
        if unacked is not None:
            level = fmt.age_level(unacked.oldest_age, unacked.visibility_timeout)
            text.append("\nunacked ", _palette.DIM)
            text.append(fmt.count(unacked.count), "bold")
            text.append("   oldest ", _palette.DIM)
            text.append(fmt.duration(unacked.oldest_age), _palette.LEVEL[level])
            text.append(f" / {fmt.duration(unacked.visibility_timeout)} visibility", _palette.DIM)
        super().update(text)
