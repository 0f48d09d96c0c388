"""Acknowledgement modes seen from Redis (the ``unacked`` hash), Reject / Ignore, and what is
stored in the result backend: track_started, ignore_result, store_errors_even_if_ignored,
update_state."""

from __future__ import annotations

from typing import Any

import pytest
from tests import runtime_tasks as tasks
from tests.integration.runtime_fixtures import (
    Ledger,
    dead_letters,
    queue_length,
    result_meta,
    unacked_by_task,
    wait_state,
    wait_until,
)

from tq import states

pytestmark = pytest.mark.redis


def _finished_in(runtime: Any, task_id: str, state: str) -> bool:
    return any(r.task_id == task_id and r.state == state for r in runtime.snapshot().recent)


def _nothing_stored(task_id: str) -> bool:
    backend = tasks.app.backend
    assert backend is not None
    return not backend.client.exists(backend.key(task_id))


@pytest.mark.timeout(30)
def test_acks_late_task_stays_in_unacked_while_it_runs(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    make_runtime(concurrency=2)
    result = tasks.late_wait_flag.delay("late")
    ledger.wait_started(result.id)
    assert result.id in unacked_by_task(broker), "acked before the task finished"
    assert ledger.dones(result.id) == 0
    ledger.set_flag("late")
    assert result.get(timeout=10) == "late"
    wait_until(lambda: result.id not in unacked_by_task(broker), 5, "the late ack")


@pytest.mark.timeout(30)
def test_early_ack_removes_the_message_from_unacked_while_the_task_runs(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    make_runtime(concurrency=2)
    result = tasks.wait_for_flag.delay("early")
    ledger.wait_started(result.id)
    wait_until(lambda: result.id not in unacked_by_task(broker), 5, "the early ack")
    assert ledger.dones(result.id) == 0, "the task is still running when it is acked"
    ledger.set_flag("early")
    assert result.get(timeout=10) == "early"


@pytest.mark.timeout(30)
def test_reject_with_requeue_delivers_the_message_again(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    runtime = make_runtime(concurrency=2)
    result = tasks.reject_requeue_once.delay()
    assert result.get(timeout=10) == "accepted on delivery 2"
    assert ledger.execs(result.id) == 2
    assert runtime.snapshot().counters.rejected == 1
    wait_until(lambda: not unacked_by_task(broker), 5, "every delivery acked")
    assert not dead_letters()


@pytest.mark.timeout(30)
def test_reject_without_requeue_dead_letters_the_message(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    runtime = make_runtime(concurrency=2)
    result = tasks.reject_dead.delay()
    wait_until(
        lambda: any(d.get("task_id") == result.id for d in dead_letters()),
        10,
        "the rejected message in tq.dead",
    )
    entry = next(d for d in dead_letters() if d.get("task_id") == result.id)
    assert "refusing this one" in entry["reason"]
    assert entry["queue"] == "celery"
    wait_until(lambda: not unacked_by_task(broker), 5, "the rejected message acked")
    assert queue_length() == 0
    assert ledger.execs(result.id) == 1
    assert _nothing_stored(result.id)
    snap = runtime.snapshot()
    assert snap.counters.rejected == 1 and snap.counters.dead_lettered == 1
    assert snap.dead_letter_count == 1


@pytest.mark.timeout(30)
def test_ignore_stores_nothing_and_acks(make_runtime: Any, ledger: Ledger, broker: Any) -> None:
    runtime = make_runtime(concurrency=2)
    result = tasks.ignored.delay()
    wait_until(lambda: _finished_in(runtime, result.id, states.IGNORED), 10, "the ignored outcome")
    assert ledger.execs(result.id) == 1
    assert _nothing_stored(result.id)
    assert tasks.app.AsyncResult(result.id).state == states.PENDING
    wait_until(lambda: not unacked_by_task(broker), 5, "the message acked")


@pytest.mark.timeout(30)
def test_track_started_stores_started_with_pid_and_hostname(
    make_runtime: Any, ledger: Ledger
) -> None:
    runtime = make_runtime(concurrency=2)
    result = tasks.tracked.delay("tracked")
    ledger.wait_started(result.id)  # STARTED is stored just before the body runs
    wait_state(result.id, states.STARTED, timeout=10)
    info = tasks.app.AsyncResult(result.id).info
    assert info["pid"] == ledger.pid(result.id)
    assert info["hostname"] == runtime.hostname
    ledger.set_flag("tracked")
    assert result.get(timeout=10) == "tracked"


@pytest.mark.timeout(30)
def test_ignore_result_stores_nothing(make_runtime: Any, ledger: Ledger) -> None:
    runtime = make_runtime(concurrency=2)
    result = tasks.quiet.delay()
    wait_until(lambda: _finished_in(runtime, result.id, states.SUCCESS), 10, "the success")
    assert ledger.dones(result.id) == 1
    assert _nothing_stored(result.id)


@pytest.mark.timeout(30)
def test_errors_are_stored_even_if_ignored_when_asked(make_runtime: Any, ledger: Ledger) -> None:
    make_runtime(concurrency=2)
    result = tasks.quiet_failure.delay()
    wait_state(result.id, states.FAILURE, timeout=10)
    meta = result_meta(result.id)
    assert meta["result"]["exc_type"] == "ValueError"
    assert "stored even though ignored" in meta["result"]["exc_message"][0]


@pytest.mark.timeout(30)
def test_update_state_progress_is_visible_while_the_task_runs(
    make_runtime: Any, ledger: Ledger
) -> None:
    make_runtime(concurrency=2)
    result = tasks.progress.delay("progress")
    wait_state(result.id, "PROGRESS", timeout=10)
    assert tasks.app.AsyncResult(result.id).info == {"step": 1, "of": 2}
    assert not tasks.app.AsyncResult(result.id).ready()
    ledger.set_flag("progress")
    assert result.get(timeout=10) == "complete"
