"""``OverviewScreen``: the dashboard — throughput and failure sparklines, counters, queue depths,
the pool's children, broker health and the cluster at a glance.

Renders snapshots only; grow and shrink (``+``/``-``) are the one action here.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Static

from tq.worker.snapshot import Snapshot
from tq_console import format as fmt
from tq_console.screens.base import ViewScreen
from tq_console.screens.pool import pool_request
from tq_console.widgets import _palette
from tq_console.widgets.broker_status import BrokerStatus
from tq_console.widgets.event_tail import EventTail
from tq_console.widgets.pool_meter import PoolMeter
from tq_console.widgets.queue_bars import QueueBars
from tq_console.widgets.stat import Stat
from tq_console.widgets.throughput import Throughput

# (widget id, label, value style) of the counter tiles, in reading order.
_COUNTERS = (
    ("received", "Received", "bold"),
    ("succeeded", "Succeeded", f"bold {_palette.OK}"),
    ("failed", "Failed", f"bold {_palette.CRIT}"),
    ("retried", "Retried", f"bold {_palette.WARN}"),
    ("revoked", "Revoked", f"bold {_palette.DIM}"),
    ("rejected", "Rejected", f"bold {_palette.WARN}"),
    ("dead_lettered", "Dead letters", f"bold {_palette.CRIT}"),
    ("rate", "Finished / s", f"bold {_palette.INFO}"),
)


def _panel(title: str, *children: object, id: str) -> Vertical:
    panel = Vertical(*children, id=id, classes="panel")  # type: ignore[arg-type]
    panel.border_title = title
    return panel


class OverviewScreen(ViewScreen):
    """The dashboard view."""

    VIEW = "overview"
    TITLE = "Overview"
    MUTATING = frozenset({"grow", "shrink"})

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("plus", "grow", "Grow", key_display="+"),
        Binding("minus", "shrink", "Shrink", key_display="-"),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="row", id="top-row"):
            yield _panel(
                "Throughput",
                Throughput("Finished", _palette.OK, id="throughput"),
                Throughput("Failed", _palette.CRIT, id="failures"),
                id="throughput-panel",
            )
            counters = Grid(
                *(Stat(label, style, id=f"stat-{key}") for key, label, style in _COUNTERS),
                id="counters",
            )
            yield _panel("Counters", counters, id="counters-panel")
        with Horizontal(classes="row"):
            yield _panel("Queues", QueueBars(id="queue-bars"), id="queues-panel")
            yield _panel("Pool", PoolMeter(id="pool-meter"), id="pool-panel")
        with Horizontal(classes="row"):
            yield _panel("Broker", BrokerStatus(id="broker-status"), id="broker-panel")
            yield _panel("Cluster", Static(id="cluster-summary"), id="cluster-panel")
        yield _panel("Recent events", EventTail(id="event-tail"), id="events-panel")

    def render_snapshot(self, snapshot: Snapshot) -> None:
        counters = snapshot.counters
        self.query_one("#throughput", Throughput).update(counters.history, counters.rate)
        failure_now = counters.failure_history[-1] if counters.failure_history else 0.0
        self.query_one("#failures", Throughput).update(counters.failure_history, failure_now)
        for key, _, _ in _COUNTERS:
            value = fmt.rate(counters.rate) if key == "rate" else fmt.count(getattr(counters, key))
            self.query_one(f"#stat-{key}", Stat).update(value)
        self.query_one(QueueBars).update(snapshot.queues)
        self.query_one(PoolMeter).update(
            snapshot.children, snapshot.concurrency, snapshot.recycled_children
        )
        self.query_one(BrokerStatus).update(snapshot.broker, snapshot.unacked)
        self.query_one("#cluster-summary", Static).update(_cluster_text(snapshot))
        self.query_one(EventTail).update(snapshot.events)

    def action_grow(self) -> None:
        if self.snapshot is not None:
            self.request(pool_request(self.snapshot, 1))

    def action_shrink(self) -> None:
        if self.snapshot is not None:
            self.request(pool_request(self.snapshot, -1))


def _cluster_text(snapshot: Snapshot) -> Text:
    now = snapshot.taken_at
    online = sum(worker.online for worker in snapshot.workers)
    text = Text()
    if snapshot.workers:
        text.append(f"{online}", f"bold {_palette.OK}")
        text.append(f"/{len(snapshot.workers)} workers online", _palette.TEXT)
    else:
        text.append("no cluster heartbeats yet", _palette.DIM)
    text.append(
        f"   {len(snapshot.active)} active  {len(snapshot.reserved)} reserved", _palette.DIM
    )
    due = sorted(timer.due for timer in snapshot.timers)
    text.append(f"\n{len(snapshot.timers)} timers", "bold")
    if due:
        text.append(f"   next {fmt.until(due[0], now)}", _palette.MAGENTA)
    upcoming = [entry for entry in snapshot.beat if entry.next_run is not None]
    if upcoming:
        first = min(upcoming, key=lambda entry: entry.next_run or 0.0)
        text.append("\nbeat ", "bold")
        text.append(f"{first.name} {fmt.until(first.next_run, now)}", _palette.MAGENTA)
    dead = snapshot.dead_letter_count
    text.append(
        f"\n{fmt.count(dead)} dead letters", f"bold {_palette.CRIT}" if dead else _palette.DIM
    )
    return text
