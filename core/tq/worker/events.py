"""Worker events: task events (batched as ``task.multi`` when enabled), worker-online /
heartbeat / offline, the bounded event ring and the throughput counters ``snapshot()`` shows.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tq.worker.snapshot import Counters, EventRecord

logger = logging.getLogger(__name__)

#: Events kept for the console's event view.
RING_SIZE = 500
#: Seconds of per-second throughput history kept for sparklines.
HISTORY_S = 120
#: Upper bounds (seconds) of the task runtime histogram; the last catches everything.
RUNTIME_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    float("inf"),
)


@dataclass(slots=True)
class Tally:
    """Counters and per-second history."""

    received: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    revoked: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    per_second: deque[tuple[int, int, int]] = field(default_factory=lambda: deque(maxlen=HISTORY_S))
    total_by_name: dict[str, int] = field(default_factory=dict)
    #: Finished tasks by (task name, final state), for metrics.
    by_name_state: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Runtime histogram: counts per upper bound in RUNTIME_BUCKETS (cumulative on export).
    runtime_counts: list[int] = field(default_factory=lambda: [0] * len(RUNTIME_BUCKETS))
    runtime_sum: float = 0.0

    def finished(self, name: str, state: str, runtime: float | None) -> None:
        self.total_by_name[name] = self.total_by_name.get(name, 0) + 1
        key = (name, state)
        self.by_name_state[key] = self.by_name_state.get(key, 0) + 1
        if runtime is not None:
            self.runtime_sum += runtime
            for i, bound in enumerate(RUNTIME_BUCKETS):
                if runtime <= bound:
                    self.runtime_counts[i] += 1
                    break

    def tick(self, now: float, kind: str) -> None:
        second = int(now)
        if self.per_second and self.per_second[-1][0] == second:
            s, done, failed = self.per_second[-1]
            self.per_second[-1] = (s, done + 1, failed + (kind == "failed"))
        else:
            last = self.per_second[-1][0] if self.per_second else second - 1
            for gap in range(last + 1, second):
                if second - gap < HISTORY_S:
                    self.per_second.append((gap, 0, 0))
            self.per_second.append((second, 1, int(kind == "failed")))

    def counters(self, now: float) -> Counters:
        second = int(now)
        # snapshot() calls this on another thread while the controller appends: iterate a
        # copy (deque.copy runs in C under the GIL) so the deque never changes mid-loop.
        hist = {s: (d, f) for s, d, f in self.per_second.copy()}
        span = range(second - 60, second)
        done = tuple(float(hist.get(s, (0, 0))[0]) for s in span)
        failed = tuple(float(hist.get(s, (0, 0))[1]) for s in span)
        recent = done[-5:]
        return Counters(
            received=self.received,
            succeeded=self.succeeded,
            failed=self.failed,
            retried=self.retried,
            revoked=self.revoked,
            rejected=self.rejected,
            dead_lettered=self.dead_lettered,
            rate=sum(recent) / max(len(recent), 1),
            history=done,
            failure_history=failed,
        )


class WorkerEvents:
    """Records events in the ring and, when enabled, publishes them in Celery's format."""

    def __init__(self, app: Any, hostname: str, task_events: bool) -> None:
        self.app = app
        self.hostname = hostname
        self.task_events = task_events
        self.ring: deque[EventRecord] = deque(maxlen=RING_SIZE)
        self.tally = Tally()
        self._pending: list[dict[str, Any]] = []
        self._dispatcher: Any = None
        self.processed = 0

    def _get_dispatcher(self) -> Any:
        if self._dispatcher is None:
            from tq.app.events import EventDispatcher

            self._dispatcher = EventDispatcher(self.app, hostname=self.hostname, enabled=True)
        return self._dispatcher

    def task(
        self, type_: str, task_id: str, task_name: str | None, detail: str = "", **fields: Any
    ) -> None:
        """Record a task event; queue it for publishing when task events are on."""
        now = time.time()
        self.ring.append(EventRecord(now, type_, task_id, task_name, detail, self.hostname))
        if self.task_events:
            self._pending.append({"type": type_, "uuid": task_id, **fields})

    def flush(self) -> None:
        """Publish queued task events as ``task.multi`` batches (one PUBLISH per 24)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        try:
            self._get_dispatcher().send_batch(pending)
        except Exception:
            logger.warning("Could not publish %d task event(s)", len(pending), exc_info=True)

    def worker(self, type_: str, active: int = 0, freq: float = 2.0) -> None:
        """worker-online / worker-heartbeat / worker-offline (always sent, as Celery does)."""
        now = time.time()
        if type_ != "worker-heartbeat":
            self.ring.append(EventRecord(now, type_, None, None, "", self.hostname))
        try:
            self._get_dispatcher().send(
                type_,
                freq=freq,
                active=active,
                processed=self.processed,
                loadavg=[round(x, 2) for x in os.getloadavg()],
                sw_ident="tq",
                sw_ver=_version(),
                sw_sys="Linux",
            )
        except Exception:
            logger.warning("Could not publish %s", type_, exc_info=True)

    def clock_value(self) -> int:
        """The Lamport clock of this worker's events."""
        try:
            return int(self._get_dispatcher().clock.value)
        except Exception:
            return 0

    def adjust_clock(self, other: int) -> None:
        try:
            self._get_dispatcher().clock.adjust(other)
        except Exception:
            logger.debug("clock adjust failed", exc_info=True)

    def note(
        self, type_: str, detail: str, task_id: str | None = None, name: str | None = None
    ) -> None:
        """A ring-only record (dead letters, pool changes, commands)."""
        self.ring.append(EventRecord(time.time(), type_, task_id, name, detail, self.hostname))


def _version() -> str:
    from tq import __version__

    return __version__
