"""Rate limits (token buckets, changed at runtime) and soft / hard time limits (T23)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from tests import runtime_tasks as tasks
from tests.integration.runtime_fixtures import (
    Ledger,
    child_pids,
    result_meta,
    unacked_by_task,
    wait_state,
    wait_until,
)

from tq import states

pytestmark = pytest.mark.redis


def _start_times(ledger: Ledger) -> list[float]:
    return sorted(float(v) for v in ledger.values("limited_at"))


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_thirty_tasks_at_ten_per_second_take_at_least_two_and_a_half_seconds(
    make_runtime: Any, ledger: Ledger
) -> None:
    runtime = make_runtime(concurrency=2)
    results = [tasks.limited.delay() for _ in range(30)]
    for r in results:
        r.get(timeout=20)
    starts = _start_times(ledger)
    assert len(starts) == 30
    span = starts[-1] - starts[0]
    assert span >= 2.5, f"30 tasks at 10/s started within {span:.2f}s"
    bucket = next(b for b in runtime.snapshot().buckets if b.task_name == tasks.limited.name)
    assert bucket.rate == "10/s"
    assert bucket.waiting == 0


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_set_rate_limit_at_runtime_slows_and_then_frees_a_task_type(
    make_runtime: Any, ledger: Ledger
) -> None:
    runtime = make_runtime(concurrency=2)
    outcome = runtime.set_rate_limit(tasks.limited.name, "4/s")
    assert outcome.ok, outcome.message
    slow = [tasks.limited.delay() for _ in range(9)]
    for r in slow:
        r.get(timeout=20)
    starts = _start_times(ledger)
    assert starts[-1] - starts[0] >= 1.9, "9 tasks at 4/s need at least 2 s"

    outcome = runtime.set_rate_limit(tasks.limited.name, None)
    assert outcome.ok, outcome.message
    assert not any(b.task_name == tasks.limited.name for b in runtime.snapshot().buckets)
    ledger.client.delete(tasks.key("limited_at"))
    fast = [tasks.limited.delay() for _ in range(30)]
    for r in fast:
        r.get(timeout=20)
    starts = _start_times(ledger)
    # At 10/s these would need 2.9 s; unlimited noops on two children take a fraction.
    assert starts[-1] - starts[0] < 2.0, "the rate limit is still applied"


@pytest.mark.timeout(60)
def test_removing_a_rate_limit_releases_the_tasks_waiting_on_its_bucket(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    runtime = make_runtime(concurrency=2)
    assert runtime.set_rate_limit(tasks.limited.name, "1/m").ok
    results = [tasks.limited.delay() for _ in range(5)]
    wait_until(
        lambda: sum(b.waiting for b in runtime.snapshot().buckets) == 4,
        10,
        "4 tasks waiting on the 1/m bucket",
    )
    assert runtime.set_rate_limit(tasks.limited.name, None).ok
    for r in results:
        assert r.get(timeout=10) is None
    wait_until(lambda: not unacked_by_task(broker), 5, "every message acked")
    assert all(ledger.execs(r.id) == 1 for r in results)


@pytest.mark.timeout(30)
def test_soft_time_limit_is_catchable_inside_the_task(make_runtime: Any, ledger: Ledger) -> None:
    make_runtime(concurrency=2)
    result = tasks.soft_limited.delay()
    assert result.get(timeout=10) == "caught soft limit"
    assert ledger.dones(result.id) == 1


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_hard_time_limit_kills_and_replaces_the_child_twenty_times_over(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    runtime = make_runtime(concurrency=2)
    limit = tasks.hard_limited.time_limit
    assert limit is not None
    overshoot: list[float] = []
    replaced: list[float] = []
    for round_ in range(20):
        before = child_pids(runtime.snapshot())
        result = tasks.hard_limited.delay()
        ledger.wait_started(result.id)
        started = ledger.started_at(result.id)
        victim = ledger.pid(result.id)
        assert started is not None and victim in before
        wait_state(result.id, states.FAILURE, timeout=10)
        overshoot.append(time.time() - (started + limit))

        def new_child(victim: int | None = victim) -> bool:
            snap = runtime.snapshot()
            return victim not in child_pids(snap) and len(snap.children) == 2

        wait_until(new_child, 10, f"round {round_}: child {victim} replaced")
        replaced.append(time.time() - (started + limit))
        meta = result_meta(result.id)
        assert meta["result"]["exc_type"] == "TimeLimitExceeded"
        assert tasks.noop.delay(round_).get(timeout=10) == round_, "the pool still serves"
        assert ledger.dones(result.id) == 0

    snap = runtime.snapshot()
    assert snap.counters.failed == 20
    assert len(snap.children) == 2
    wait_until(lambda: not unacked_by_task(broker), 5, "every message acked")
    overshoot.sort()
    replaced.sort()
    print(
        f"\nT23 hard limit x20: FAILURE seen {overshoot[10] * 1000:.0f} ms (median), "
        f"{overshoot[-1] * 1000:.0f} ms (max) after the limit; replacement child visible "
        f"{replaced[10] * 1000:.0f} ms (median), {replaced[-1] * 1000:.0f} ms (max) after it"
    )
