"""``Runtime.snapshot()`` taken from another thread at 10 Hz while the worker drains 2,000
tasks: never raises, counters only grow, sizes stay bounded, and it stays cheap."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest
from tests import runtime_tasks as tasks
from tests.integration.runtime_fixtures import Ledger, unacked_by_task, wait_until

from tq.worker import snapshot_builder
from tq.worker.events import RING_SIZE, Tally
from tq.worker.snapshot import Snapshot

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: Snapshots per second the console's bridge might take.
RATE_HZ = 10.0
COUNTER_FIELDS = (
    "received",
    "succeeded",
    "failed",
    "retried",
    "revoked",
    "rejected",
    "dead_lettered",
)


class Sampler(threading.Thread):
    """Takes ``runtime.snapshot()`` every 1/RATE_HZ s until stopped; keeps every snapshot,
    how long each took, and any exception."""

    def __init__(self, runtime: Any) -> None:
        super().__init__(name="snapshot-sampler", daemon=True)
        self.runtime = runtime
        self.snapshots: list[Snapshot] = []
        self.costs: list[float] = []
        self.errors: list[BaseException] = []
        self.halt = threading.Event()

    def run(self) -> None:
        period = 1.0 / RATE_HZ
        while not self.halt.is_set():
            began = time.perf_counter()
            try:
                snap = self.runtime.snapshot()
            except BaseException as exc:  # the test reports it; the sampler keeps going
                self.errors.append(exc)
            else:
                self.costs.append(time.perf_counter() - began)
                self.snapshots.append(snap)
            self.halt.wait(max(period - (time.perf_counter() - began), 0.0))


def _check_bounded(snap: Snapshot, concurrency: int) -> None:
    assert len(snap.children) == concurrency, snap.children
    assert snap.concurrency == concurrency
    assert len(snap.reserved) + len(snap.active) <= snap.prefetch_limit
    assert len(snap.active) <= concurrency
    for table in (snap.reserved, snap.scheduled, snap.recent, snap.revoked):
        assert len(table) <= snapshot_builder.TABLE_MAX
    assert len(snap.unacked.entries) <= snapshot_builder.UNACKED_SAMPLE
    assert len(snap.events) <= min(200, RING_SIZE)
    assert len(snap.counters.history) == 60
    c = snap.counters
    assert c.received >= c.succeeded + c.failed, c


@pytest.mark.timeout(180)
def test_snapshots_at_ten_hertz_during_a_drain_are_consistent_and_cheap(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    total, concurrency = 2000, 2
    for i in range(total):
        tasks.noop.delay(i)
    runtime = make_runtime(concurrency=concurrency)
    sampler = Sampler(runtime)
    sampler.start()
    try:
        wait_until(lambda: ledger.done_count() >= total, 120, f"{total} tasks done")
        wait_until(
            lambda: runtime.snapshot().counters.succeeded == total, 10, "the last outcomes counted"
        )
    finally:
        sampler.halt.set()
        sampler.join(5)

    assert not sampler.errors, f"snapshot() raised: {sampler.errors[:3]!r}"
    snaps = sampler.snapshots
    assert len(snaps) >= 10, f"only {len(snaps)} snapshots taken"
    for snap in snaps:
        _check_bounded(snap, concurrency)
    for before, after in itertools.pairwise(snaps):
        for name in COUNTER_FIELDS:
            assert getattr(after.counters, name) >= getattr(before.counters, name), name
        assert after.taken_at >= before.taken_at
        assert after.queues[0].ready <= before.queues[0].ready, "the backlog grew"
    assert snaps[-1].counters.failed == 0
    wait_until(lambda: not unacked_by_task(broker), 5, "every message acked")

    costs = sorted(sampler.costs)
    mean = sum(costs) / len(costs)
    p95 = costs[int(len(costs) * 0.95)]
    print(
        f"\nsnapshot cost over {len(costs)} snapshots during a {total}-task drain: "
        f"mean {mean * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, max {costs[-1] * 1000:.1f} ms"
    )
    assert mean < 0.25, f"snapshot() takes {mean * 1000:.0f} ms on average"


@pytest.mark.timeout(30)
def test_counters_can_be_read_from_another_thread_while_the_controller_ticks() -> None:
    """``snapshot()`` reads ``Tally.counters()`` on the caller's thread while the controller
    appends a new second to the throughput history; the read must never see the deque
    change under it (RuntimeError: deque mutated during iteration)."""
    tally = Tally()
    deadline = time.monotonic() + 2.0
    errors: list[BaseException] = []

    def tick() -> None:
        second = 1_000_000.0
        while time.monotonic() < deadline and not errors:
            second += 1.0  # every tick starts a new second: one append each
            tally.tick(second, "done")

    def read() -> None:
        while time.monotonic() < deadline and not errors:
            try:
                tally.counters(1_000_060.0)
            except RuntimeError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=tick), threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors, f"counters() raced the controller: {errors[0]!r}"
