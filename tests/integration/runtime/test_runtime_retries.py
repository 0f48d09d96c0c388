"""Retries: ``self.retry(countdown=...)``, ``autoretry_for`` with ``retry_backoff``, the final
error, the RETRY state in between, and the re-sent message (same id, ``retries + 1``)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from tests import runtime_tasks as tasks
from tests.integration.runtime_fixtures import (
    Ledger,
    result_meta,
    unacked_by_task,
    wait_state,
    wait_until,
)

from tq import states

pytestmark = pytest.mark.redis


def _retry_log(ledger: Ledger, task_id: str) -> list[tuple[int, float]]:
    rows = [v.split() for v in ledger.values(f"retries:{task_id}")]
    return [(int(n), float(t)) for n, t in rows]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_retry_with_countdown_resends_the_same_id_until_max_retries_then_fails(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    runtime = make_runtime(concurrency=2)
    result = tasks.retry_countdown.delay(0.6)

    seen_retry_states = 0
    scheduled_retries: set[int] = set()

    def finished() -> bool:
        nonlocal seen_retry_states
        state = tasks.app.AsyncResult(result.id).state
        seen_retry_states += state == states.RETRY
        for entry in runtime.snapshot().scheduled:
            if entry.task_id == result.id:
                scheduled_retries.add(entry.retries)
        return state == states.FAILURE

    wait_until(finished, 20, "the retried task to fail for good")
    meta = result_meta(result.id)
    assert meta["result"]["exc_type"] == "MaxRetriesExceededError"
    log = _retry_log(ledger, result.id)
    assert [n for n, _ in log] == [0, 1, 2, 3], "one execution per retry, retries counted"
    assert all(b - a >= 0.6 for (_, a), (_, b) in itertools.pairwise(log)), log
    assert seen_retry_states > 0, "RETRY was never stored between the executions"
    assert scheduled_retries == {1, 2, 3}, "the re-sent message has the same id, retries + 1"
    snap = runtime.snapshot()
    assert snap.counters.retried == 3
    assert snap.counters.failed == 1
    assert snap.counters.received == 4
    wait_until(lambda: not unacked_by_task(broker), 5, "every delivery acked")


@pytest.mark.timeout(60)
def test_autoretry_with_backoff_retries_then_stores_the_original_error(
    make_runtime: Any, ledger: Ledger
) -> None:
    make_runtime(concurrency=2)
    result = tasks.autoretry.delay()
    wait_state(result.id, {states.RETRY, states.FAILURE}, timeout=10)
    wait_state(result.id, states.FAILURE, timeout=20)
    meta = result_meta(result.id)
    assert meta["result"]["exc_type"] == "KeyError", "the original error, not Max…"
    log = _retry_log(ledger, result.id)
    assert [n for n, _ in log] == [0, 1, 2]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(log)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4, f"backoff 0.2 * 2**retries not applied: {gaps}"


@pytest.mark.timeout(60)
def test_retry_that_succeeds_later_ends_in_success(make_runtime: Any, ledger: Ledger) -> None:
    make_runtime(concurrency=2)
    result = tasks.retry_until_flag.delay()
    wait_state(result.id, states.RETRY, timeout=10)
    assert result_meta(result.id)["result"]["exc_type"] == "RuntimeError"
    ledger.set_flag(result.id)
    assert result.get(timeout=10).startswith("done after ")
    assert ledger.execs(result.id) >= 2


@pytest.mark.timeout(60)
def test_immediate_retry_of_an_acks_late_task_acks_every_delivery_once(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    """The re-sent message has the same task id and no delay, so it can be dispatched to the
    other child while the first execution is still reporting. Both must be accounted for."""
    runtime = make_runtime(concurrency=2)
    result = tasks.late_retry_now.delay()
    wait_until(lambda: ledger.execs(result.id) == 3, 15, "3 executions")
    # Each execution counts itself before it notes its retry number: wait for the third note.
    wait_until(lambda: len(_retry_log(ledger, result.id)) == 3, 5, "3 retry notes")
    assert sorted(n for n, _ in _retry_log(ledger, result.id)) == [0, 1, 2]

    def settled() -> bool:
        counters = runtime.snapshot().counters
        return counters.retried == 2 and counters.failed == 1

    wait_until(settled, 5, f"2 retried + 1 failed outcomes (have {runtime.snapshot().counters})")
    wait_until(
        lambda: not unacked_by_task(broker),
        5,
        "every delivery acked (a lost outcome leaves a late message in unacked)",
    )
    assert ledger.execs(result.id) == 3


@pytest.mark.timeout(60)
def test_a_stale_retry_state_never_overwrites_the_final_result(
    make_runtime: Any, ledger: Ledger
) -> None:
    runtime = make_runtime(concurrency=2)
    result = tasks.retry_overtaken.delay()
    wait_until(lambda: ledger.execs(result.id) == 2, 15, "2 executions")

    def both_reported() -> bool:
        counters = runtime.snapshot().counters
        return counters.retried == 1 and counters.failed == 1

    wait_until(both_reported, 15, "the RETRY and the FAILURE outcomes")
    state = tasks.app.AsyncResult(result.id).state
    assert state == states.FAILURE, f"the last execution failed, but {state} is stored"
