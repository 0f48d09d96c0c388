"""The Runtime command API the console stands on: each command returns a ``CommandResult``
and changes the world (queues, dead letters, pool, consumers, buckets)."""

from __future__ import annotations

from typing import Any

import pytest
from tests import runtime_tasks as tasks
from tests.integration.runtime_fixtures import (
    Ledger,
    child_pids,
    dead_letters,
    queue_length,
    unacked_by_task,
    wait_state,
    wait_until,
)

from tq import states
from tq.worker.snapshot import CommandResult

pytestmark = pytest.mark.redis


def _ok(result: Any) -> CommandResult:
    assert isinstance(result, CommandResult), result
    assert result.ok, result.message
    assert result.message
    return result


def _refused(result: Any) -> CommandResult:
    assert isinstance(result, CommandResult), result
    assert not result.ok, result.message
    assert result.message
    return result


def _dead_ids(task_id: str) -> list[str]:
    return [d["id"] for d in dead_letters() if d.get("task_id") == task_id]


@pytest.mark.timeout(30)
def test_purge_empties_a_queue_and_counts_what_went(make_runtime: Any, ledger: Ledger) -> None:
    runtime = make_runtime(queues=["celery"])
    sent = [tasks.noop.apply_async((i,), queue="elsewhere") for i in range(5)]
    assert queue_length("elsewhere") == 5
    result = _ok(runtime.purge("elsewhere"))
    assert result.count == 5
    assert queue_length("elsewhere") == 0
    assert _ok(runtime.purge("elsewhere")).count == 0
    assert all(ledger.execs(r.id) == 0 for r in sent)


@pytest.mark.timeout(30)
def test_revoke_returns_a_result_and_lists_the_id(make_runtime: Any, ledger: Ledger) -> None:
    runtime = make_runtime()
    result = _ok(runtime.revoke(["a-1", "a-2"]))
    assert result.count == 2
    assert {"a-1", "a-2"} <= set(runtime.snapshot().revoked)
    assert tasks.app.AsyncResult("a-1").state == states.REVOKED


@pytest.mark.timeout(30)
def test_retry_resends_a_failed_task_with_its_id_and_arguments(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    runtime = make_runtime()
    failed = tasks.failing.delay("first")
    wait_state(failed.id, states.FAILURE)
    wait_until(
        lambda: any(r.task_id == failed.id for r in runtime.snapshot().recent),
        5,
        "the failure among recent tasks",
    )

    result = _ok(runtime.retry(failed.id))
    assert result.count == 1
    ledger.wait_started(failed.id, times=2)
    wait_until(lambda: runtime.snapshot().counters.failed == 2, 10, "the second failure")
    assert ledger.execs(failed.id) == 2
    assert tasks.app.AsyncResult(failed.id).state == states.FAILURE
    _refused(runtime.retry("no-such-task"))
    wait_until(lambda: not unacked_by_task(broker), 5, "every message acked")


@pytest.mark.timeout(30)
def test_requeue_dead_runs_the_message_again_and_delete_dead_removes_it(
    make_runtime: Any, ledger: Ledger
) -> None:
    runtime = make_runtime()
    rejected = tasks.reject_dead.delay()
    wait_until(lambda: _dead_ids(rejected.id), 10, "the dead letter")
    (entry,) = _dead_ids(rejected.id)
    assert runtime.snapshot().dead_letter_count == 1

    _ok(runtime.requeue_dead(entry))
    ledger.wait_started(rejected.id, times=2)  # it ran again (and rejected itself again)
    wait_until(
        lambda: len(_dead_ids(rejected.id)) == 1 and _dead_ids(rejected.id) != [entry],
        10,
        "the second dead letter",
    )
    _refused(runtime.requeue_dead(entry))

    (again,) = _dead_ids(rejected.id)
    _ok(runtime.delete_dead(again))
    assert not dead_letters()
    assert runtime.snapshot().dead_letter_count == 0
    _refused(runtime.delete_dead(again))
    assert ledger.execs(rejected.id) == 2


@pytest.mark.timeout(30)
def test_grow_and_shrink_change_the_pool(make_runtime: Any, ledger: Ledger) -> None:
    runtime = make_runtime(concurrency=2)
    before = child_pids(runtime.snapshot())
    assert _ok(runtime.grow(2)).count == 4
    wait_until(lambda: len(runtime.snapshot().children) == 4, 10, "4 children")
    assert before < child_pids(runtime.snapshot())
    assert _ok(runtime.shrink(3)).count == 1
    wait_until(lambda: len(runtime.snapshot().children) == 1, 10, "1 child")
    assert runtime.snapshot().concurrency == 1
    assert _ok(runtime.shrink(1)).count == 1, "the last child stays"
    assert tasks.noop.delay("served").get(timeout=10) == "served"


@pytest.mark.timeout(30)
def test_add_consumer_and_cancel_consumer_change_what_is_consumed(
    make_runtime: Any, ledger: Ledger
) -> None:
    runtime = make_runtime(queues=["celery"])
    waiting = tasks.noop.apply_async(("extra",), queue="extra")
    assert tasks.noop.delay("default").get(timeout=10) == "default"
    assert queue_length("extra") == 1, "consumed before add_consumer"

    _ok(runtime.add_consumer("extra"))
    assert waiting.get(timeout=10) == "extra"
    assert "extra" in [q.name for q in runtime.snapshot().queues]

    _ok(runtime.cancel_consumer("extra"))
    _refused(runtime.cancel_consumer("extra"))
    assert tasks.noop.delay("fence").get(timeout=10) == "fence"  # a pop after the cancel
    left = tasks.noop.apply_async(("left",), queue="extra")
    assert tasks.noop.delay("after").get(timeout=10) == "after"
    assert queue_length("extra") == 1 and ledger.execs(left.id) == 0


@pytest.mark.timeout(30)
def test_pause_queue_and_resume_queue(make_runtime: Any, ledger: Ledger) -> None:
    runtime = make_runtime(queues=["celery", "other"])
    _ok(runtime.pause_queue("other"))
    _refused(runtime.pause_queue("never-consumed"))
    assert runtime.snapshot().paused_queues == ("other",)
    assert not next(q for q in runtime.snapshot().queues if q.name == "other").consuming
    assert tasks.noop.delay("fence").get(timeout=10) == "fence"
    held = tasks.noop.apply_async(("held",), queue="other")
    assert tasks.noop.delay("after").get(timeout=10) == "after"
    assert queue_length("other") == 1 and ledger.execs(held.id) == 0

    _ok(runtime.resume_queue("other"))
    _refused(runtime.resume_queue("other"))
    assert held.get(timeout=10) == "held"
    assert runtime.snapshot().paused_queues == ()


@pytest.mark.timeout(30)
def test_set_rate_limit_changes_the_bucket_and_refuses_bad_input(
    make_runtime: Any, ledger: Ledger
) -> None:
    runtime = make_runtime()
    _ok(runtime.set_rate_limit(tasks.noop.name, "100/m"))
    bucket = next(b for b in runtime.snapshot().buckets if b.task_name == tasks.noop.name)
    assert bucket.rate == "100/m"
    _refused(runtime.set_rate_limit("no.such.task", "1/s"))
    _refused(runtime.set_rate_limit(tasks.noop.name, "ten per second"))
    assert next(b for b in runtime.snapshot().buckets if b.task_name == tasks.noop.name)
    _ok(runtime.set_rate_limit(tasks.noop.name, None))
    assert not [b for b in runtime.snapshot().buckets if b.task_name == tasks.noop.name]
