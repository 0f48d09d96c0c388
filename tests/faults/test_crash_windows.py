"""Crashes in the race windows, made deterministic with ``TQ_FAULT`` (RELIABILITY.md T06, T22):
right after a pop (kombu's BRPOP → HSET window, which tq's pop script closes) and between
publishing a retry and acknowledging the original."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from tests.faults.harness import Rig, publish_many, wait_until

from tq.faults import FAULT_EXIT_CODE

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: Crashing workers started (T06), and how many run side by side.
T06_ITERATIONS = 40
T06_PARALLEL = 8
#: A worker killed while it holds the sweep lock (``unacked_mutex``) blocks every sweep until
#: the lock expires: kombu's (and tq's) default is 300 s. The crashing workers set 5 s so the
#: test does not wait five minutes when a crash lands inside a sweep.
T06_MUTEX_EXPIRE_S = 5


@pytest.mark.timeout(300)
def test_crash_right_after_pop_loses_nothing_over_forty_fresh_workers(
    rig: Rig, figures: dict[str, object]
) -> None:
    """T06: 40 fresh workers each exit (code 137, as if SIGKILLed) right after their first
    pop; whatever they popped is already in unacked, so a healthy worker with a short
    visibility timeout restores and runs everything: 0 lost, 0 dup."""
    vt = 3.0
    app = rig.app(vt=vt)
    ids = publish_many(app, "fault.work", 300)
    env = {"TQ_FAULT": "after_pop", "TQ_FAULT_AFTER": "0"}

    def crash_one(i: int) -> int | None:
        # the default (1 h) visibility timeout: crashing workers never restore each other's
        # pops at start-up, so what they popped stays counted in unacked
        w = rig.worker(
            name=f"crash{i}",
            concurrency=1,
            pool="solo",
            env=env,
            wait=False,
            transport={"unacked_mutex_expire": T06_MUTEX_EXPIRE_S},
        )
        return w.wait(60)

    with ThreadPoolExecutor(T06_PARALLEL) as pool:
        codes = list(pool.map(crash_one, range(T06_ITERATIONS)))
    assert codes == [FAULT_EXIT_CODE] * T06_ITERATIONS
    assert rig.ledger.exec_count() == 0, "a crashing worker ran a task"
    stranded_by_crashes = rig.unacked(app)
    assert stranded_by_crashes > 0
    assert stranded_by_crashes + rig.queue_length(app) == len(ids)
    rig.worker(concurrency=2, vt=vt)
    counts = rig.drain(app, ids, 90)
    assert counts.lost == 0 and counts.dup == 0 and counts.stranded == 0, (
        f"{counts.line()}\n{rig.logs()}"
    )
    figures.update(
        row="T06",
        injected_crashes=T06_ITERATIONS,
        popped_then_crashed=stranded_by_crashes,
        lost_per_crashes=f"0/{T06_ITERATIONS}",
        **counts.figures(),
    )


@pytest.mark.parametrize(
    ("task", "pool"),
    [
        ("fault.retry_once", "prefork"),
        ("fault.retry_once_late", "prefork"),
        ("fault.retry_once", "solo"),
        ("fault.retry_once_late", "solo"),
    ],
)
def test_crash_after_publishing_a_retry_loses_nothing_and_reruns_each_attempt_at_most_once(
    rig: Rig, task: str, pool: str, figures: dict[str, object]
) -> None:
    """T22: the process running the task exits right after the retry is published and before
    the original is acknowledged (``TQ_FAULT=after_retry_publish``). Prefork loses a child,
    solo the whole worker (then a healthy one takes over after the visibility timeout).
    No loss; each attempt (``<id>:<retries>``) runs at most once more than it should."""
    vt = 3.0
    app = rig.app(vt=vt)
    ids = publish_many(app, task, 5, kwargs={"countdown": 0.5})
    faulty = rig.worker(
        concurrency=1,
        pool=pool,
        vt=vt,
        wait=pool != "solo",
        env={"TQ_FAULT": "after_retry_publish"},
    )
    if pool == "solo":
        assert faulty.wait(60) == FAULT_EXIT_CODE
        rig.worker(concurrency=1, pool=pool, vt=vt)
    else:
        # each child dies once per first attempt; the retries (retries=1) do not retry again
        wait_until(lambda: rig.ledger.all_done(ids), 60, "every retried task to finish")
    counts = rig.drain(app, ids, 60)
    attempts = rig.ledger.attempts()
    extra = {k: v - 1 for k, v in attempts.items() if v > 1}
    why = f"{counts.line()} attempts={attempts}\n{rig.logs()}"
    assert counts.lost == 0, why
    assert all(v <= 1 for v in extra.values()), why
    assert counts.stranded == 0, why
    figures.update(
        row="T22",
        task=task,
        pool=pool,
        extra_runs_total=sum(extra.values()),
        extra_runs_max_per_attempt=max(extra.values(), default=0),
        **counts.figures(),
    )
