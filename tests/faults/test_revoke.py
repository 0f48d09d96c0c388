"""Revocation (RELIABILITY.md T25): a queued id, an ETA task held in memory, a running task
terminated, a revoke sent before a restart, and one sent while no worker is online (tq keeps
cluster-wide revokes in ``tq.revoked``, which a starting worker reads)."""

from __future__ import annotations

import time

import pytest
from tests.faults.harness import Rig, publish_many, wait_until

from tq import states

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _good_task_runs(rig: Rig, app: object) -> None:
    ids = publish_many(app, "fault.work", 1)  # type: ignore[arg-type]
    wait_until(lambda: rig.ledger.done_of(ids[0]) == 1, 30, "a good task after the revoke")


def test_revoked_queued_task_never_runs(rig: Rig, figures: dict[str, object]) -> None:
    """T25 (a): the target waits behind a 3 s task on -c 1 (prefetch 1) and is revoked."""
    app = rig.app()
    worker = rig.worker(concurrency=1, args=["--prefetch-multiplier", "1"])
    blocker = app.send_task("fault.work", kwargs={"seconds": 3})
    target = app.send_task("fault.work_result")
    wait_until(lambda: rig.ledger.exec_of(blocker.id) == 1, 30, "the blocker to start")
    app.control.revoke(target.id, reply=True, timeout=2, destination=[worker.nodename])
    wait_until(lambda: app.AsyncResult(target.id).state == states.REVOKED, 30, "REVOKED")
    _good_task_runs(rig, app)
    assert rig.ledger.exec_of(target.id) == 0
    assert rig.unacked(app) == 0
    figures.update(row="T25a", executions=0, state=states.REVOKED)


def test_revoked_eta_task_held_in_memory_never_runs(rig: Rig, figures: dict[str, object]) -> None:
    """T25 (b): revoked while the worker holds it for its countdown."""
    app = rig.app()
    worker = rig.worker(concurrency=1)
    target = app.send_task("fault.work_result", countdown=4)

    def held() -> bool:
        got = app.control.inspect(destination=[worker.nodename], timeout=1).scheduled() or {}
        return any(e["request"]["id"] == target.id for e in got.get(worker.nodename, []))

    wait_until(held, 20, "the ETA task in the worker's schedule")
    app.control.revoke(target.id)
    time.sleep(5)  # past the countdown
    _good_task_runs(rig, app)
    assert rig.ledger.exec_of(target.id) == 0
    assert app.AsyncResult(target.id).state == states.REVOKED
    wait_until(lambda: rig.unacked(app) == 0, 10, "the revoked delivery to be acked")
    figures.update(row="T25b", executions=0, state=states.REVOKED)


def test_terminate_stops_a_running_task_and_the_pool_keeps_serving(
    rig: Rig, figures: dict[str, object]
) -> None:
    """T25 (c): revoke(terminate=True) on a 30 s task: terminated, REVOKED stored, never
    finished, never re-run; the child is replaced."""
    app = rig.app()
    worker = rig.worker(concurrency=1)
    target = app.send_task("fault.work_result", kwargs={"seconds": 30})
    wait_until(lambda: rig.ledger.exec_of(target.id) == 1, 30, "the task to start")
    start = time.monotonic()
    app.control.revoke(target.id, terminate=True)
    wait_until(lambda: app.AsyncResult(target.id).state == states.REVOKED, 20, "REVOKED")
    stopped_s = time.monotonic() - start
    _good_task_runs(rig, app)
    assert rig.ledger.exec_of(target.id) == 1 and rig.ledger.done_of(target.id) == 0
    assert worker.is_alive() and rig.unacked(app) == 0
    figures.update(row="T25c", executions=1, finished=0, terminate_to_revoked_s=round(stopped_s, 2))


@pytest.mark.parametrize("case", ["restart-between", "worker-offline"])
def test_revoke_sent_without_a_worker_online_is_honoured_at_start(
    rig: Rig, case: str, figures: dict[str, object]
) -> None:
    """T25 (d) and (e): revoked, then published while no worker runs (after a restart, or
    with none ever started); the next worker reads ``tq.revoked`` and never runs it."""
    app = rig.app()
    if case == "restart-between":
        first = rig.worker(concurrency=1)
        first.signal(15)
        assert first.wait(30) == 0
    ids = publish_many(app, "fault.work_result", 3)
    app.control.revoke(ids)
    rig.worker(concurrency=1)
    _good_task_runs(rig, app)
    wait_until(
        lambda: rig.queue_length(app) == 0 and rig.unacked(app) == 0,
        20,
        "the revoked messages to be consumed",
    )
    assert rig.ledger.execs(ids) == [0, 0, 0]
    assert all(app.AsyncResult(i).state == states.REVOKED for i in ids)
    figures.update(row=f"T25-{case}", executions=0, state=states.REVOKED)
