"""Prometheus metrics (``--metrics-port``): read at scrape time from the runtime's counters
and one cheap snapshot, served by prometheus-client on a thread of its own."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from tq.worker.events import RUNTIME_BUCKETS

logger = logging.getLogger(__name__)


class RuntimeCollector:
    """A prometheus-client collector over a Runtime (or Monitor) snapshot."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        snap = self.runtime.snapshot()
        node = snap.hostname
        tally = getattr(getattr(self.runtime, "events", None), "tally", None)
        tasks = CounterMetricFamily(
            "tq_tasks",
            "Tasks finished, by name and final state",
            labels=["worker", "name", "state"],
        )
        if tally is not None:
            for (name, state), n in sorted(tally.by_name_state.items()):
                tasks.add_metric([node, name, state], n)
        yield tasks
        if tally is not None:
            hist = HistogramMetricFamily(
                "tq_task_runtime_seconds", "Task runtime", labels=["worker"]
            )
            cumulative, buckets = 0, []
            for bound, n in zip(RUNTIME_BUCKETS, tally.runtime_counts, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
            hist.add_metric([node], buckets, tally.runtime_sum)
            yield hist
        qlen = GaugeMetricFamily(
            "tq_queue_length",
            "Ready messages per queue and priority step",
            labels=["queue", "priority"],
        )
        for q in snap.queues:
            for step, n in q.lengths:
                qlen.add_metric([q.name, str(step)], n)
        yield qlen
        yield GaugeMetricFamily(
            "tq_unacked", "Deliveries held unacknowledged (all workers)", value=snap.unacked.count
        )
        yield GaugeMetricFamily(
            "tq_unacked_oldest_age_seconds",
            "Age of the oldest unacked delivery",
            value=snap.unacked.oldest_age or 0.0,
        )
        yield GaugeMetricFamily(
            "tq_prefetch_limit", "Messages this worker may hold", value=snap.prefetch_limit
        )
        yield GaugeMetricFamily(
            "tq_dead_letters", "Entries in tq.dead", value=snap.dead_letter_count
        )
        children = GaugeMetricFamily(
            "tq_child_rss_bytes", "RSS of each pool child", labels=["worker", "pid", "state"]
        )
        for c in snap.children:
            children.add_metric([node, str(c.pid), c.state], c.rss)
        yield children
        yield GaugeMetricFamily("tq_children", "Pool children", value=len(snap.children))
        yield GaugeMetricFamily("tq_active", "Tasks running now", value=len(snap.active))
        yield GaugeMetricFamily(
            "tq_reserved", "Tasks received, waiting for a child", value=len(snap.reserved)
        )


def serve(runtime: Any, port: int, addr: str = "127.0.0.1") -> CollectorRegistry:
    """Serve ``/metrics`` on ``addr:port``; returns the registry."""
    registry = CollectorRegistry()
    registry.register(RuntimeCollector(runtime))  # type: ignore[arg-type]
    start_http_server(port, addr=addr, registry=registry)
    logger.info("Prometheus metrics on http://%s:%d/metrics", addr, port)
    return registry
