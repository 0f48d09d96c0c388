"""Revocation (RELIABILITY.md T25 a-c): a queued id never runs, an ETA task held in memory
never runs, ``terminate`` ends a running task with REVOKED 'terminated'; through the Runtime
command and through remote control from a client."""

from __future__ import annotations

from typing import Any

import pytest
from tests import runtime_tasks as tasks
from tests.integration.runtime_fixtures import (
    Ledger,
    child_of,
    child_pids,
    result_meta,
    started_runtime_is_ready,
    unacked_by_task,
    wait_state,
    wait_until,
)

from tq import states
from tq.worker.snapshot import CommandResult

pytestmark = pytest.mark.redis


def _occupy(ledger: Ledger, n: int, flag: str) -> list[Any]:
    """Fill ``n`` children with tasks that wait for ``flag``."""
    blockers = [tasks.wait_for_flag.delay(f"{flag}-{i}") for i in range(n)]
    for b in blockers:
        ledger.wait_started(b.id)
    return blockers


def _release(ledger: Ledger, blockers: list[Any], flag: str) -> None:
    for i in range(len(blockers)):
        ledger.set_flag(f"{flag}-{i}")
    for b in blockers:
        b.get(timeout=10)


def _assert_revoked(task_id: str, reason: str) -> None:
    meta = result_meta(task_id)
    assert meta["status"] == states.REVOKED
    assert meta["result"]["exc_type"] == "TaskRevokedError"
    assert reason in meta["result"]["exc_message"][0]


@pytest.mark.timeout(30)
def test_revoke_with_terminate_ends_a_running_task_as_revoked_terminated(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    runtime = make_runtime(concurrency=2)
    victim = tasks.sleeper.delay(tasks.LONG_S)
    ledger.wait_started(victim.id)
    pid = child_of(runtime, victim.id)

    outcome = runtime.revoke(victim.id, terminate=True)
    assert isinstance(outcome, CommandResult) and outcome.ok
    assert "terminated 1" in outcome.message
    wait_state(victim.id, states.REVOKED, timeout=10)
    _assert_revoked(victim.id, "terminated")
    assert ledger.dones(victim.id) == 0
    wait_until(
        lambda: pid not in child_pids(runtime.snapshot()) and len(runtime.snapshot().children) == 2,
        10,
        "the terminated child replaced",
    )
    assert tasks.noop.delay("next").get(timeout=10) == "next"
    assert runtime.snapshot().counters.revoked == 1
    wait_until(lambda: not unacked_by_task(broker), 5, "every message acked")


@pytest.mark.timeout(30)
def test_revoked_queued_id_never_runs(make_runtime: Any, ledger: Ledger, broker: Any) -> None:
    runtime = make_runtime(concurrency=2)
    blockers = _occupy(ledger, 2, "queued")
    queued = tasks.noop.delay("never")
    wait_until(
        lambda: any(r.task_id == queued.id for r in runtime.snapshot().reserved),
        10,
        "the queued task in the reserved line",
    )

    outcome = runtime.revoke(queued.id)
    assert outcome.ok and queued.id in runtime.snapshot().revoked
    assert tasks.app.AsyncResult(queued.id).state == states.REVOKED, "stored at once"
    _release(ledger, blockers, "queued")
    assert tasks.noop.delay("after").get(timeout=10) == "after"
    wait_until(lambda: not unacked_by_task(broker), 5, "the revoked message acked")
    assert ledger.execs(queued.id) == 0
    _assert_revoked(queued.id, "revoked")


@pytest.mark.timeout(30)
def test_revoked_eta_task_held_in_memory_never_runs(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    runtime = make_runtime(concurrency=2)
    held = tasks.noop.apply_async(("never",), countdown=1.0)
    wait_until(
        lambda: any(r.task_id == held.id for r in runtime.snapshot().scheduled),
        10,
        "the ETA task in the timer",
    )
    assert runtime.revoke(held.id).ok
    wait_until(lambda: not unacked_by_task(broker), 10, "the revoked ETA message acked")
    assert ledger.execs(held.id) == 0
    _assert_revoked(held.id, "revoked")


@pytest.mark.timeout(30)
def test_revoke_through_remote_control_discards_a_queued_id(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    runtime = make_runtime(concurrency=2)
    started_runtime_is_ready(runtime)
    blockers = _occupy(ledger, 2, "remote")
    queued = tasks.noop.delay("never")
    wait_until(
        lambda: any(r.task_id == queued.id for r in runtime.snapshot().reserved),
        10,
        "the queued task in the reserved line",
    )

    tasks.app.control.revoke(queued.id)
    wait_until(
        lambda: queued.id in runtime.snapshot().revoked, 10, "the worker to receive the revoke"
    )
    _release(ledger, blockers, "remote")
    assert tasks.noop.delay("after").get(timeout=10) == "after"
    wait_until(lambda: not unacked_by_task(broker), 5, "the revoked message acked")
    assert ledger.execs(queued.id) == 0
    assert tasks.app.AsyncResult(queued.id).state == states.REVOKED


@pytest.mark.timeout(30)
def test_terminate_through_remote_control_with_a_reply(make_runtime: Any, ledger: Ledger) -> None:
    runtime = make_runtime(concurrency=2)
    started_runtime_is_ready(runtime)
    victim = tasks.sleeper.delay(tasks.LONG_S)
    ledger.wait_started(victim.id)

    replies = tasks.app.control.revoke(victim.id, terminate=True, reply=True, timeout=2.0)
    assert replies and runtime.hostname in replies[0], replies
    assert "ok" in replies[0][runtime.hostname]
    wait_state(victim.id, states.REVOKED, timeout=10)
    _assert_revoked(victim.id, "terminated")
    assert ledger.dones(victim.id) == 0
