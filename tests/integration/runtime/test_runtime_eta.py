"""ETA / countdown, the visibility timeout (RELIABILITY.md T15, T16) and expiry.

A held message (ETA in the timer, or an acks_late task running) stays in ``unacked`` and the
worker renews its lease, so the visibility-timeout sweep, ours or another worker's, never
restores it behind our back: each task runs exactly once.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from tests import runtime_tasks as tasks
from tests.integration.runtime_fixtures import (
    Ledger,
    queue_length,
    result_meta,
    unacked_by_task,
    wait_state,
    wait_until,
)

from tq import states

pytestmark = pytest.mark.redis

#: A short visibility timeout, so a stale lease would be restored within the test.
VISIBILITY_S = 3.0


@pytest.mark.timeout(30)
def test_countdown_task_runs_no_earlier_than_its_countdown(
    make_runtime: Any, ledger: Ledger
) -> None:
    make_runtime()
    before = time.time()
    result = tasks.noop.apply_async(("late",), countdown=2)
    assert result.get(timeout=10) == "late"
    started = ledger.started_at(result.id)
    assert started is not None
    assert started - before >= 2.0, f"ran {started - before:.3f}s after sending"
    assert ledger.execs(result.id) == 1


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_eta_beyond_the_visibility_timeout_runs_exactly_once(
    make_runtime: Any, app_conf: Any, ledger: Ledger, broker: Any
) -> None:
    app_conf.broker_transport_options = {"visibility_timeout": VISIBILITY_S}
    runtime = make_runtime(restore_interval=0.5)
    results = [tasks.noop.apply_async((i,), countdown=8) for i in range(3)]
    wait_until(lambda: len(runtime.snapshot().scheduled) == 3, 10, "3 ETA tasks in the timer")
    held = unacked_by_task(broker)
    assert all(r.id in held for r in results), "an ETA task stays in unacked until it runs"

    assert [r.get(timeout=20) for r in results] == [0, 1, 2]
    wait_until(lambda: not unacked_by_task(broker), 5, "the ETA tasks' acks")
    for r in results:
        assert ledger.execs(r.id) == 1, f"{r.id} ran {ledger.execs(r.id)} times"
    snap = runtime.snapshot()
    assert snap.counters.received == 3, "a restored copy would have been received again"
    assert queue_length() == 0


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_acks_late_task_longer_than_the_visibility_timeout_runs_once_with_a_second_worker(
    make_runtime: Any, app_conf: Any, ledger: Ledger, broker: Any
) -> None:
    app_conf.broker_transport_options = {"visibility_timeout": VISIBILITY_S}
    first = make_runtime(concurrency=1, restore_interval=0.5)
    long = tasks.late_sleeper.delay(3 * VISIBILITY_S)
    ledger.wait_started(long.id)
    second = make_runtime(concurrency=1, restore_interval=0.5)  # idle, sweeping every 0.5 s

    assert long.get(timeout=30) == 3 * VISIBILITY_S
    assert ledger.execs(long.id) == 1, "the lease was not renewed: restored and run twice"
    wait_until(lambda: not unacked_by_task(broker), 5, "the late ack")
    assert second.snapshot().counters.received == 0
    assert first.snapshot().counters.succeeded == 1


@pytest.mark.timeout(30)
def test_expires_in_seconds_revokes_a_task_held_past_its_expiry(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    runtime = make_runtime()
    result = tasks.noop.apply_async(("never",), countdown=1.5, expires=0.5)
    wait_state(result.id, states.REVOKED, timeout=10)
    meta = result_meta(result.id)
    assert meta["result"]["exc_type"] == "TaskRevokedError"
    assert "expired" in meta["result"]["exc_message"][0]
    assert ledger.execs(result.id) == 0
    wait_until(lambda: not unacked_by_task(broker), 5, "the expired message's ack")
    assert result.id in runtime.snapshot().revoked


@pytest.mark.timeout(30)
def test_expires_as_a_datetime_in_the_past_revokes_without_running(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    runtime = make_runtime()
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    result = tasks.noop.apply_async(("never",), expires=past)
    wait_state(result.id, states.REVOKED, timeout=10)
    after = tasks.noop.delay("after")
    assert after.get(timeout=10) == "after"
    assert ledger.execs(result.id) == 0
    wait_until(lambda: not unacked_by_task(broker), 5, "the expired message's ack")
    assert runtime.snapshot().counters.revoked == 1
