"""The pool under churn (RELIABILITY.md T23, T24, and a grow/shrink drain): children killed
at the hard time limit round after round, children recycled after every task, and the pool
resized in the middle of a drain. Every id runs exactly once; the pool keeps serving."""

from __future__ import annotations

import time

import pytest
from tests.faults.harness import Rig, meta_of, publish_many, wait_until

from tq import states

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.mark.timeout(180)
def test_hard_time_limit_thirty_rounds_leaves_the_pool_serving(
    rig: Rig, figures: dict[str, object]
) -> None:
    """T23: 30 tasks past their 0.5 s hard limit on -c 2: each child is killed and replaced,
    FAILURE TimeLimitExceeded is stored for each, and the pool then runs 20 good tasks."""
    app = rig.app()
    worker = rig.worker(concurrency=2)
    start = time.monotonic()
    stuck = [app.send_task("fault.stuck") for _ in range(30)]
    wait_until(
        lambda: all(app.AsyncResult(r.id).state == states.FAILURE for r in stuck),
        120,
        "30 time-limit failures",
        interval=0.2,
    )
    rounds_s = time.monotonic() - start
    for r in stuck:
        assert "TimeLimitExceeded" in str(meta_of(app, r.id).get("result"))
    good = publish_many(app, "fault.work", 20)
    counts = rig.drain(app, good, 60)
    assert counts.lost == 0 and counts.dup == 0 and counts.stranded == 0
    assert worker.is_alive()
    assert len(worker.children()) == 2
    assert worker.count("Hard time limit") == 30
    figures.update(
        row="T23",
        rounds=30,
        seconds_for_30_rounds=round(rounds_s, 1),
        mean_kill_and_replace_s=round(rounds_s / 15, 2),
        pool_alive=True,
        **counts.figures(),
    )


@pytest.mark.timeout(180)
def test_max_tasks_per_child_one_recycles_every_child_without_losing_a_task(
    rig: Rig, figures: dict[str, object]
) -> None:
    """T24: --max-tasks-per-child 1 over 200 tasks: 0 lost, 0 dup, no WorkerLostError and no
    child that died with a job at a recycle boundary."""
    app = rig.app()
    worker = rig.worker(concurrency=2, args=["--max-tasks-per-child", "1"])
    ids = publish_many(app, "fault.work_result", 200)
    start = time.monotonic()
    counts = rig.drain(app, ids, 150)
    elapsed = time.monotonic() - start
    output = worker.output()
    assert counts.lost == 0 and counts.dup == 0 and counts.stranded == 0, counts.line()
    assert "WorkerLostError" not in output
    assert "ended with exit code" not in output
    assert all(app.AsyncResult(i).state == states.SUCCESS for i in ids[:50])
    stats = app.control.inspect(destination=[worker.nodename], timeout=2).stats() or {}
    pool = stats.get(worker.nodename, {}).get("pool", {})
    figures.update(
        row="T24",
        tasks=200,
        tasks_per_s=round(200 / elapsed, 1),
        processes_now=pool.get("processes"),
        worker_lost_errors=0,
        died_with_a_job=0,
        **counts.figures(),
    )


@pytest.mark.timeout(240)
def test_grow_and_shrink_in_the_middle_of_a_drain_runs_every_id_exactly_once(
    rig: Rig, figures: dict[str, object]
) -> None:
    """A 5000-task drain on -c 2; pool_grow 2 after 1000 done, pool_shrink 3 after 3000:
    every id exactly once."""
    app = rig.app()
    worker = rig.worker(concurrency=2)
    ids = publish_many(app, "fault.work", 5000)
    wait_until(lambda: rig.ledger.done_count() >= 1000, 120, "1000 done")
    grown = app.control.pool_grow(2, destination=[worker.nodename], reply=True, timeout=5)
    wait_until(lambda: len(worker.children()) == 4, 20, "4 children")
    wait_until(lambda: rig.ledger.done_count() >= 3000, 120, "3000 done")
    shrunk = app.control.pool_shrink(3, destination=[worker.nodename], reply=True, timeout=5)
    counts = rig.drain(app, ids, 150)
    wait_until(lambda: len(worker.children()) == 1, 20, "1 child after the shrink")
    assert grown and shrunk
    assert counts.lost == 0 and counts.dup == 0 and counts.stranded == 0, counts.line()
    assert rig.ledger.execs(ids) == [1] * len(ids)
    assert worker.is_alive() and "ended with exit code" not in worker.output()
    figures.update(row="grow/shrink", grow=2, shrink=3, children_after=1, **counts.figures())
