"""A pool child killed with SIGKILL mid-task (RELIABILITY.md T02-T04), with real processes.

Early ack: the message is gone, so the worker stores FAILURE WorkerLostError and moves on.
``acks_late`` + ``reject_on_worker_lost``: the message is redelivered and runs again. A task
that kills its own child every time is dead-lettered after ``worker_delivery_limit``
deliveries instead of looping forever (Celery's F4).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Any

import pytest
from tests import runtime_tasks as tasks
from tests.integration.runtime_fixtures import (
    Ledger,
    child_of,
    child_pids,
    dead_letters,
    queue_length,
    result_meta,
    unacked_by_task,
    wait_state,
    wait_until,
)

from tq import states

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: Idle children the stress test kills.
KILLS = 40


def _replaced(runtime: Any, killed: int, concurrency: int) -> bool:
    snap = runtime.snapshot()
    return killed not in child_pids(snap) and len(snap.children) == concurrency


@pytest.mark.timeout(60)
def test_sigkill_of_child_with_early_ack_stores_worker_lost_and_pool_recovers(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    runtime = make_runtime(concurrency=2)
    victim = tasks.sleeper.delay(tasks.LONG_S)
    ledger.wait_started(victim.id)
    pid = child_of(runtime, victim.id)
    assert pid == ledger.pid(victim.id)

    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_state(victim.id, states.FAILURE, timeout=10)
    detected_s = time.monotonic() - killed_at

    meta = result_meta(victim.id)
    assert meta["result"]["exc_type"] == "WorkerLostError"
    assert "SIGKILL" in meta["result"]["exc_message"][0]
    wait_until(lambda: _replaced(runtime, pid, 2), 10, f"child {pid} to be replaced")
    assert tasks.noop.delay("after").get(timeout=10) == "after"
    assert ledger.execs(victim.id) == 1
    assert victim.id not in unacked_by_task(broker)
    snap = runtime.snapshot()
    assert snap.counters.failed == 1
    print(f"\nT02 early ack: FAILURE stored {detected_s * 1000:.0f} ms after kill -9")


@pytest.mark.timeout(60)
def test_sigkill_of_child_with_acks_late_and_reject_on_worker_lost_redelivers(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    runtime = make_runtime(concurrency=2)
    victim = tasks.lost_then_ok.delay()
    ledger.wait_started(victim.id)
    assert victim.id in unacked_by_task(broker), "an acks_late task is unacked while it runs"
    pid = child_of(runtime, victim.id)

    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    assert victim.get(timeout=15) == "second time lucky"
    rerun_s = time.monotonic() - killed_at

    assert ledger.execs(victim.id) == 2
    assert ledger.dones(victim.id) == 1
    assert ledger.client.hget(tasks.key("redelivered"), victim.id) == b"1"
    assert ledger.pid(victim.id) != pid
    wait_until(lambda: victim.id not in unacked_by_task(broker), 5, "the redelivery's ack")
    wait_until(lambda: _replaced(runtime, pid, 2), 10, f"child {pid} to be replaced")
    assert runtime.snapshot().counters.failed == 0
    print(f"\nT03 late ack: re-executed and SUCCESS {rerun_s * 1000:.0f} ms after kill -9")


@pytest.mark.timeout(90)
def test_task_that_always_kills_its_child_is_dead_lettered_after_the_delivery_limit(
    make_runtime: Any, app_conf: Any, ledger: Ledger, broker: Any
) -> None:
    app_conf.worker_delivery_limit = 3
    runtime = make_runtime(concurrency=2)
    bystanders = [tasks.noop.delay(i) for i in range(10)]
    victim = tasks.poison.delay()

    wait_state(victim.id, states.FAILURE, timeout=30)
    wait_until(
        lambda: any(d.get("task_id") == victim.id for d in dead_letters()),
        10,
        "the poison message in tq.dead",
    )
    assert ledger.execs(victim.id) == 3, "one execution per delivery, no more"
    meta = result_meta(victim.id)
    assert meta["result"]["exc_type"] == "WorkerLostError"
    assert "delivery limit 3" in meta["result"]["exc_message"][0]
    entry = next(d for d in dead_letters() if d.get("task_id") == victim.id)
    assert entry["task_name"] == tasks.poison.name
    assert "worker lost 3 times" in entry["reason"]

    # The worker stays healthy: everything else ran, the pool is whole, nothing is held.
    assert [r.get(timeout=10) for r in bystanders] == list(range(10))
    assert tasks.noop.delay("still alive").get(timeout=10) == "still alive"
    wait_until(lambda: len(runtime.snapshot().children) == 2, 10, "a full pool")
    wait_until(lambda: not unacked_by_task(broker), 5, "an empty unacked hash")
    assert queue_length() == 0
    assert runtime.snapshot().counters.dead_lettered == 1


@pytest.mark.timeout(90)
def test_children_killed_while_idle_never_stop_the_controller(
    make_runtime: Any, ledger: Ledger, broker: Any
) -> None:
    """A child can die between two jobs (OOM killer, an operator's kill). Until it is reaped
    it still looks idle, and handing it a job must not take the controller loop down."""
    runtime = make_runtime(concurrency=4)
    stop = threading.Event()
    kills = 0

    def kill_idle_children() -> None:
        nonlocal kills
        while not stop.is_set() and kills < KILLS:
            idle = [c.pid for c in runtime.snapshot().children if c.state == "idle"]
            for pid in idle[:1]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    kills += 1
            stop.wait(0.005)

    killer = threading.Thread(target=kill_idle_children, name="idle-killer")
    killer.start()
    sent: list[Any] = []
    try:
        while killer.is_alive() and not runtime.wait_stopped(0):
            sent += [tasks.noop.delay(i) for i in range(10)]
            time.sleep(0.01)
    finally:
        stop.set()
        killer.join(10)

    assert not runtime.wait_stopped(0), "the controller loop died"
    assert tasks.noop.delay("alive").get(timeout=10) == "alive"
    for r in sent:  # each ran, or was lost with its child and stored as such
        wait_state(r.id, {states.SUCCESS, states.FAILURE}, timeout=20)
    wait_until(lambda: len(runtime.snapshot().children) == 4, 10, "a full pool")
    wait_until(lambda: not unacked_by_task(broker), 10, "every message acked")
    print(f"\n{kills} idle children killed under a stream of {len(sent)} tasks")
