"""Warm and cold shutdown of a worker subprocess (RELIABILITY.md T07, T08): prefetched
messages go back to the queue with "Restoring N unacknowledged message(s)", and an acks_late
task cut short by a cold shutdown runs again after a restart."""

from __future__ import annotations

import re
import signal
import time

import pytest
from tests.faults.harness import Rig, publish_many, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]

RESTORING = re.compile(r"Restoring (\d+) unacknowledged message\(s\)")


@pytest.mark.parametrize("acks_late", [False, True], ids=["early-ack", "acks-late"])
def test_sigterm_warm_shutdown_restores_prefetched_and_nothing_is_lost_after_restart(
    rig: Rig, acks_late: bool, figures: dict[str, object]
) -> None:
    """T07: -c 2, prefetch 10, 40 x 1 s tasks, SIGTERM after 2 s: running tasks finish, the
    prefetched ones are restored (logged), exit code 0; a new worker drains: 0 lost, 0 dup."""
    task = "fault.work_late" if acks_late else "fault.work"
    app = rig.app()
    first = rig.worker(concurrency=2, args=["--prefetch-multiplier", "10"])
    ids = publish_many(app, task, 40, kwargs={"seconds": 1.0})
    wait_until(lambda: rig.ledger.exec_count() >= 1, 30, "the first task to start")
    time.sleep(2.0)
    first.signal(signal.SIGTERM)
    sent_at = time.monotonic()
    code = first.wait(30)
    exit_s = time.monotonic() - sent_at
    assert code == 0, first.output()[-3000:]
    found = RESTORING.findall(first.output())
    assert found, first.output()[-3000:]
    restored = int(found[-1])
    assert restored >= 10, first.output()[-3000:]
    assert rig.unacked(app) == 0
    rig.worker(concurrency=2)
    counts = rig.drain(app, ids, 90)
    assert counts.lost == 0 and counts.dup == 0 and counts.stranded == 0, (
        f"{counts.line()}\n{rig.logs()}"
    )
    figures.update(
        row="T07",
        acks_late=acks_late,
        restored=restored,
        exit_code=code,
        exit_after_sigterm_s=round(exit_s, 2),
        **counts.figures(),
    )


COLD = {
    "sigquit": (signal.SIGQUIT,),
    "double-sigterm": (signal.SIGTERM, signal.SIGTERM),
    "sigterm-then-sigquit": (signal.SIGTERM, signal.SIGQUIT),
}


@pytest.mark.parametrize("variant", sorted(COLD))
def test_cold_shutdown_restores_a_running_acks_late_task_that_completes_after_restart(
    rig: Rig, variant: str, figures: dict[str, object]
) -> None:
    """T08: a cold shutdown does not wait for the running acks_late task (30 s on its first
    run): it is restored ("Restoring 1 unacknowledged message(s)") and completes after a
    restart: 0 lost, exactly one extra execution (the one cut short)."""
    app = rig.app()
    first = rig.worker(concurrency=1)
    res = app.send_task("fault.work_late", kwargs={"seconds": 0.2, "first_seconds": 30})
    wait_until(lambda: rig.ledger.exec_of(res.id) == 1, 30, "the task to start")
    sent_at = time.monotonic()
    for sig in COLD[variant]:
        first.signal(sig)
        time.sleep(0.3)
    code = first.wait(20)
    exit_s = time.monotonic() - sent_at
    assert code is not None, "the worker did not leave on a cold shutdown"
    assert exit_s < 15
    assert RESTORING.findall(first.output()) == ["1"], first.output()[-3000:]
    assert rig.ledger.done_of(res.id) == 0
    rig.worker(concurrency=1)
    counts = rig.drain(app, [res.id], 60)
    assert counts.lost == 0 and counts.stranded == 0, counts.line()
    assert rig.ledger.exec_of(res.id) == 2
    figures.update(
        row="T08",
        variant=variant,
        exit_code=code,
        exit_s=round(exit_s, 2),
        restored=1,
        executions=2,
        **counts.figures(),
    )


def test_soft_shutdown_timeout_lets_a_short_task_finish_and_restores_a_long_one(
    rig: Rig, figures: dict[str, object]
) -> None:
    """T08, soft-shutdown variant: ``--soft-shutdown-timeout 3`` with two acks_late tasks
    running on a cold shutdown (SIGQUIT): the 1 s one finishes inside the window, the 30 s one
    does not and is restored ("Restoring 1 unacknowledged message(s)"), then completes after a
    restart: 0 lost, one extra execution (the run cut short)."""
    app = rig.app()
    first = rig.worker(concurrency=2, args=["--soft-shutdown-timeout", "3"])
    short = app.send_task("fault.work_late", kwargs={"seconds": 1.0})
    long = app.send_task("fault.work_late", kwargs={"seconds": 0.2, "first_seconds": 30})
    wait_until(
        lambda: rig.ledger.exec_of(short.id) == 1 and rig.ledger.exec_of(long.id) == 1,
        30,
        "both tasks to start",
    )
    sent_at = time.monotonic()
    first.signal(signal.SIGQUIT)
    code = first.wait(20)
    exit_s = time.monotonic() - sent_at
    assert code is not None, "the worker did not leave within the soft-shutdown window"
    assert 2.5 <= exit_s < 12, exit_s
    output = first.output()
    assert "Soft shutdown: 2 running task(s) get 3.0 s to finish" in output, output[-3000:]
    assert rig.ledger.done_of(short.id) == 1, "the short task was not allowed to finish"
    assert rig.ledger.done_of(long.id) == 0
    assert RESTORING.findall(output)[-1:] == ["1"], output[-3000:]
    rig.worker(concurrency=1)
    counts = rig.drain(app, [short.id, long.id], 60)
    assert counts.lost == 0 and counts.stranded == 0, counts.line()
    assert rig.ledger.exec_of(short.id) == 1
    assert rig.ledger.exec_of(long.id) == 2
    figures.update(row="T08-soft", exit_s=round(exit_s, 2), **counts.figures())
