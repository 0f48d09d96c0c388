"""The prefork pool under change: grow and shrink during a drain, recycling after
``max_tasks_per_child`` and ``max_memory_per_child`` (RELIABILITY.md T24), nothing lost or
run twice at the boundaries."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from tests import runtime_tasks as tasks
from tests.integration.runtime_fixtures import (
    Ledger,
    child_pids,
    queue_length,
    unacked_by_task,
    wait_until,
)

from tq import states

pytestmark = pytest.mark.redis


def _assert_each_ran_once(ledger: Ledger, ids: list[str]) -> None:
    execs, dones = ledger.all_execs(), ledger.all_dones()
    lost = [i for i in ids if dones.get(i, 0) == 0]
    dup = sum(max(0, execs.get(i, 0) - 1) for i in ids)
    assert not lost, f"{len(lost)} lost, e.g. {lost[:3]}"
    assert dup == 0, f"{dup} duplicate executions"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_grow_and_shrink_during_a_thousand_task_drain_runs_each_task_once(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    total = 1000
    ids = [tasks.noop.delay(i).id for i in range(total)]
    runtime = make_runtime(concurrency=2)

    def reached(n: int) -> Any:
        return lambda: ledger.done_count() >= n

    wait_until(reached(100), 60, "100 tasks done")
    grown = runtime.grow(2)
    assert grown.ok and grown.count == 4
    wait_until(lambda: len(runtime.snapshot().children) == 4, 10, "4 children")
    wait_until(reached(400), 60, "400 tasks done")
    shrunk = runtime.shrink(3)
    assert shrunk.ok and shrunk.count == 1
    wait_until(lambda: len(runtime.snapshot().children) == 1, 10, "1 child")
    wait_until(reached(600), 60, "600 tasks done")
    assert runtime.grow(1).count == 2
    wait_until(reached(total), 60, f"all {total} tasks done")

    _assert_each_ran_once(ledger, ids)
    assert sum(ledger.all_execs().values()) == total
    wait_until(lambda: not unacked_by_task(broker), 5, "every message acked")
    assert queue_length() == 0
    snap = runtime.snapshot()
    assert snap.concurrency == 2 and len(snap.children) == 2
    assert snap.counters.succeeded == total
    assert snap.counters.failed == 0


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_max_tasks_per_child_recycles_children_without_losing_tasks(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    runtime = make_runtime(concurrency=2, max_tasks_per_child=5)
    first = child_pids(runtime.snapshot())
    results = [tasks.whoami.delay() for _ in range(50)]
    pids = [r.get(timeout=30) for r in results]

    _assert_each_ran_once(ledger, [r.id for r in results])
    per_pid = Counter(pids)
    assert max(per_pid.values()) <= 5, per_pid
    full = {pid for pid, n in per_pid.items() if n == 5}
    assert len(full) >= 8, f"50 tasks / 5 per child: at least 8 full lifetimes, {per_pid}"
    assert first <= set(per_pid), "the first children served too"
    wait_until(
        lambda: runtime.snapshot().recycled_children == len(full),
        10,
        f"{len(full)} recycled children in the snapshot",
    )
    snap = runtime.snapshot()
    assert len(snap.children) == 2
    assert not child_pids(snap) & full, "every child that served 5 tasks was replaced"
    assert snap.counters.failed == 0, "no WorkerLostError at a recycle boundary"
    assert all(tasks.app.AsyncResult(r.id).state == states.SUCCESS for r in results)
    wait_until(lambda: not unacked_by_task(broker), 5, "every message acked")


@pytest.mark.timeout(60)
def test_max_memory_per_child_recycles_the_child_of_a_leaky_task(
    make_runtime: Any, ledger: Ledger
) -> None:
    leak_mib = 64
    probe = make_runtime(concurrency=1, hostname="probe@%h")
    rss = probe.snapshot().children[0].rss
    probe.stop(5)
    assert rss > 0, "psutil could not read the child's RSS"
    limit_kib = rss // 1024 + leak_mib * 1024 // 2  # above a fresh child, below a leaky one

    runtime = make_runtime(concurrency=1, max_memory_per_child=limit_kib)
    steady = {tasks.whoami.delay().get(timeout=10) for _ in range(5)}
    assert len(steady) == 1, "a child under the limit is not recycled"
    leaky_pid = tasks.leaky.delay(leak_mib).get(timeout=10)
    assert leaky_pid in steady
    after = tasks.whoami.delay().get(timeout=10)
    assert after != leaky_pid, "the child over max_memory_per_child was not replaced"
    wait_until(lambda: runtime.snapshot().recycled_children == 1, 10, "1 recycled child")
    assert runtime.snapshot().counters.failed == 0
