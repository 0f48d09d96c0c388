"""Losing pool children and whole workers (RELIABILITY.md T02-T05): SIGKILL of a child in
both ack modes, a poison task that always kills its child, and SIGKILL of the controller with
its children while tasks are prefetched and running."""

from __future__ import annotations

import os
import signal
import time

import pytest
from tests.faults.harness import Rig, meta_of, publish_many, wait_until

from tq import states

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _kill_child_running(rig: Rig, task_id: str) -> tuple[int, float]:
    """SIGKILL the pool child that runs ``task_id`` once its start shows in the ledger."""
    pid = wait_until(lambda: rig.ledger.pid_of(task_id), 30, f"{task_id} to start")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    return pid, time.monotonic()


@pytest.mark.parametrize("task", ["fault.work_result", "fault.work_late_result"])
def test_sigkill_of_a_child_mid_task_stores_worker_lost_error_and_runs_once(
    rig: Rig, task: str, figures: dict[str, object]
) -> None:
    """T02: without reject_on_worker_lost, a lost child means FAILURE WorkerLostError, the
    message is acknowledged, 1 execution; the child is replaced and the next task runs."""
    app = rig.app()
    worker = rig.worker(concurrency=1)
    res = app.send_task(task, kwargs={"seconds": 4})
    old_pid, killed_at = _kill_child_running(rig, res.id)
    wait_until(lambda: app.AsyncResult(res.id).state == states.FAILURE, 20, "FAILURE stored")
    failure_s = time.monotonic() - killed_at
    meta = meta_of(app, res.id)
    assert "WorkerLostError" in str(meta.get("result")), meta
    new_children = wait_until(
        lambda: [p for p in worker.children() if p != old_pid], 10, "a replacement child"
    )
    respawn_s = time.monotonic() - killed_at
    after = publish_many(app, "fault.work", 1)
    counts = rig.drain(app, after, 30)
    assert counts.lost == 0
    assert rig.ledger.exec_of(res.id) == 1
    assert rig.ledger.done_of(res.id) == 0
    assert rig.unacked(app) == 0
    figures.update(
        row="T02",
        task=task,
        executions=1,
        kill_to_failure_s=round(failure_s, 2),
        respawn_s=round(respawn_s, 2),
        new_child=new_children[0],
    )


def test_sigkill_of_a_child_with_reject_on_worker_lost_redelivers_once(
    rig: Rig, figures: dict[str, object]
) -> None:
    """T03: acks_late + reject_on_worker_lost: requeued, 2 executions, SUCCESS, the second
    delivery carries the redelivered flag."""
    app = rig.app()
    rig.worker(concurrency=1)
    res = app.send_task("fault.work_late_reject", kwargs={"seconds": 0.2, "first_seconds": 4})
    _pid, killed_at = _kill_child_running(rig, res.id)
    wait_until(lambda: rig.ledger.done_of(res.id) == 1, 30, "the redelivered run")
    rerun_s = time.monotonic() - killed_at
    assert rig.ledger.exec_of(res.id) == 2
    assert rig.ledger.redelivered(res.id) == 1
    wait_until(lambda: rig.unacked(app) == 0, 10, "the ack")
    figures.update(
        row="T03", executions=2, kill_to_rerun_done_s=round(rerun_s, 2), redelivered_flag=True
    )


def test_task_that_always_kills_its_child_is_dead_lettered_at_the_delivery_limit(
    rig: Rig, figures: dict[str, object]
) -> None:
    """T04: bounded: after ``worker_delivery_limit`` (5) deliveries the message goes to tq.dead
    with FAILURE stored; the worker stays healthy and a good task published meanwhile runs."""
    app = rig.app()
    worker = rig.worker(concurrency=1)
    started = time.monotonic()
    poison = app.send_task("fault.suicide")
    good = publish_many(app, "fault.work", 5)
    wait_until(lambda: rig.dead(app), 60, "the poison task in tq.dead")
    elapsed = time.monotonic() - started
    counts = rig.drain(app, good, 30)
    assert counts.lost == 0 and counts.dup == 0
    assert rig.ledger.exec_of(poison.id) == 5
    ((meta, _raw),) = rig.dead(app)
    assert meta["task_id"] == poison.id
    assert "delivery limit 5" in meta["reason"]
    assert app.AsyncResult(poison.id).state == states.FAILURE
    assert worker.is_alive()
    assert rig.unacked(app) == 0 and rig.queue_length(app) == 0
    assert worker.count(r"requeued \(delivery \d of 5\)") == 4
    figures.update(
        row="T04",
        deliveries=5,
        seconds_to_dead_letter=round(elapsed, 2),
        dead_reason=meta["reason"],
    )


@pytest.mark.parametrize("acks_late", [False, True], ids=["early-ack", "acks-late"])
def test_sigkill_of_the_whole_worker_with_prefetched_and_running_tasks(
    rig: Rig, acks_late: bool, figures: dict[str, object]
) -> None:
    """T05: -c 2, prefetch 10, 40 x 1 s tasks, SIGKILL of controller and children after 3 s;
    a second worker with a short visibility timeout finishes the rest.
    Early ack: lost ≤ running (2), 0 dup. acks_late: 0 lost, dup ≤ running."""
    vt = 4.0
    task = "fault.work_late" if acks_late else "fault.work"
    app = rig.app(vt=vt)
    first = rig.worker(concurrency=2, vt=vt, args=["--prefetch-multiplier", "10"])
    ids = publish_many(app, task, 40, kwargs={"seconds": 1.0})
    wait_until(lambda: rig.ledger.exec_count() >= 1, 30, "the first task to start")
    time.sleep(3.0)
    held = rig.unacked(app)
    first.kill_all()
    killed_at = time.monotonic()
    running = rig.ledger.exec_count() - rig.ledger.done_count()
    rig.worker(concurrency=2, vt=vt)
    counts = rig.drain(app, ids, 90)
    drained_s = time.monotonic() - killed_at
    why = f"{counts.line()} running={running} held={held} dead={rig.dead(app)[:3]}\n{rig.logs()}"
    # The bound's "running" is the concurrency (2): a child may have just finished a task whose
    # late ack had not reached Redis yet, which is running as far as the bound goes.
    if acks_late:
        assert counts.lost == 0, why
        assert counts.dup <= 2, why
    else:
        assert counts.lost <= 2, why
        assert counts.dup == 0, why
    assert counts.stranded == 0
    figures.update(
        row="T05",
        acks_late=acks_late,
        held_at_kill=held,
        running_at_kill=running,
        time_to_full_drain_s=round(drained_s, 1),
        **counts.figures(),
    )


@pytest.mark.parametrize("pool", ["solo", "prefork", "threads"])
def test_early_ack_task_is_acknowledged_before_it_runs_so_a_worker_kill_never_reruns_it(
    rig: Rig, pool: str, figures: dict[str, object]
) -> None:
    """T05 (early ack, every pool): the ack of an ``acks_late=False`` task reaches Redis before
    the task body runs, as in Celery (the solo pool acks before it calls the task). So SIGKILL
    of the whole worker mid-task loses that run (at most once) but never runs it again."""
    vt = 2.0
    app = rig.app(vt=vt)
    first = rig.worker(concurrency=1, pool=pool, vt=vt)
    res = app.send_task("fault.work", kwargs={"seconds": 0.1, "first_seconds": 30})
    wait_until(lambda: rig.ledger.exec_of(res.id) == 1, 30, "the task to start")
    wait_until(lambda: rig.unacked(app) == 0, 5, "the early ack while the task runs")
    first.kill_all()
    rig.worker(concurrency=1, pool=pool, vt=vt)
    time.sleep(2 * vt)  # past the visibility timeout and a sweep: a re-run would show now
    counts = rig.drain(app, [res.id], 10, grace=0)
    assert rig.ledger.exec_of(res.id) == 1
    assert counts.dup == 0 and counts.lost == 1 and counts.stranded == 0
    figures.update(row="T05", pool=pool, acks_late=False, running_at_kill=1, **counts.figures())
