"""Scheduling under load and restarts (RELIABILITY.md T19, T26): short tasks must not queue
behind a long one on a busy child, and a worker restart must not release a rate-limit burst.

Scaled: T19's long task lasts 8 s instead of 60 s; T26 runs at ``12/m`` (one start every 5 s)
so that a restart fits between two starts, and its "60 s window" is the matching 20 s window
(at most 4 starts), which keeps the test under a minute.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time

import pytest
from tests.faults.harness import Rig, publish_many, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: T19: the long task and the short ones.
LONG_S = 8.0
SHORT_S = 0.1
SHORT_N = 20


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


@pytest.mark.timeout(90)
def test_short_tasks_run_on_the_free_child_while_a_long_one_runs(
    rig: Rig, figures: dict[str, object]
) -> None:
    """T19: -c 2, one 8 s task, then 20 x 0.1 s tasks: every short task runs on the other
    child and finishes while the long one is still running (none waits behind it); the
    worker holds the rest as reserved in the controller, never queued on the busy child."""
    app = rig.app()
    worker = rig.worker(concurrency=2)
    long_id = publish_many(app, "fault.work", 1, kwargs={"seconds": LONG_S})[0]
    wait_until(lambda: rig.ledger.exec_of(long_id) == 1, 30, "the long task to start")
    long_pid = rig.ledger.pid_of(long_id)
    published = time.time()
    short = publish_many(app, "fault.work", SHORT_N, kwargs={"seconds": SHORT_S})
    reserved_seen: list[int] = []
    stop = threading.Event()

    def sample_reserved() -> None:
        while not stop.is_set():
            try:
                got = app.control.inspect(destination=[worker.nodename], timeout=0.5).reserved()
                reserved_seen.append(len((got or {}).get(worker.nodename, [])))
            except Exception:  # a sample may miss; the test does not depend on it
                pass
            stop.wait(0.1)

    sampler = threading.Thread(target=sample_reserved, name="t19-reserved")
    sampler.start()
    try:
        wait_until(lambda: rig.ledger.all_done(short), 30, "the short tasks", interval=0.05)
    finally:
        stop.set()
        sampler.join(5)
    long_done_then = rig.ledger.done_of(long_id)
    all_short_s = time.time() - published
    starts = [rig.ledger.started_at(i) for i in short]
    latencies = [s - published + SHORT_S for s in starts if s is not None]
    pids = {rig.ledger.pid_of(i) for i in short}
    wait_until(lambda: rig.ledger.done_of(long_id) == 1, 30, "the long task to finish")
    why = f"long pid {long_pid}, short pids {pids}, latencies {latencies}\n{rig.logs()}"
    assert long_done_then == 0, "the short tasks finished only after the long one: " + why
    assert long_pid not in pids, "a short task ran on the busy child: " + why
    assert len(latencies) == SHORT_N
    p95 = _percentile(latencies, 95)
    assert p95 < LONG_S, why
    figures.update(
        row="T19",
        long_s=LONG_S,
        short_tasks=SHORT_N,
        short_p50_s=round(_percentile(latencies, 50), 2),
        short_p95_s=round(p95, 2),
        short_max_s=round(max(latencies), 2),
        all_short_done_s=round(all_short_s, 2),
        short_on_busy_child=0,
        max_reserved_in_controller=max(reserved_seen, default=0),
        reserved_samples=len(reserved_seen),
    )


#: T26: the rate (one start every 5 s, capacity 1) and its scaled window.
RATE = "12/m"
SPACING_S = 5.0
WINDOW_S = 20.0
WINDOW_MAX = 4
T26_TASKS = 7
#: Starts before the restart.
BEFORE_RESTART = 3


def _max_in_window(stamps: list[float], window: float) -> int:
    """Most starts in any half-open window ``[t, t + window)`` (t slides over the starts)."""
    ordered = sorted(stamps)
    best = 0
    j = 0
    for i, t in enumerate(ordered):
        while j < len(ordered) and ordered[j] < t + window:
            j += 1
        best = max(best, j - i)
    return best


@pytest.mark.timeout(120)
def test_rate_limit_holds_across_a_worker_restart(rig: Rig, figures: dict[str, object]) -> None:
    """T26: ``rate_limit='12/m'`` on one task type, 7 tasks, the worker restarted (SIGTERM,
    then a new worker with the same node name) right after the 3rd start. Before the restart
    consecutive starts are >= 5 s apart. Across the restart the new worker's bucket starts
    with one token (capacity 1), so at most one start comes early: never a burst, and at most
    ``WINDOW_MAX + 1`` starts in any 20 s window (the figure is recorded)."""
    settings = {"task_annotations": {"fault.work": {"rate_limit": RATE}}}
    app = rig.app(settings=settings)
    worker = rig.worker(name="t26", concurrency=2, settings=settings)
    ids = publish_many(app, "fault.work", T26_TASKS)

    def started_count() -> int:
        return sum(1 for e in rig.ledger.execs(ids) if e)

    wait_until(lambda: started_count() >= BEFORE_RESTART, 40, "the first starts")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()[-3000:]
    stopped = time.time()
    second = rig.worker(name="t26", concurrency=2, settings=settings)
    up = time.time()
    wait_until(lambda: rig.ledger.all_done(ids), 60, "every rate-limited task")
    stamps = sorted(s for i in ids if (s := rig.ledger.started_at(i)) is not None)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    before = [t for t in stamps if t < stopped]
    after = [t for t in stamps if t >= stopped]
    across = after[0] - before[-1] if before and after else None
    max_window = _max_in_window(stamps, WINDOW_S)
    counts = rig.ledger.counts(ids)
    why = f"starts {stamps} gaps {gaps} stopped {stopped} up {up}\n{rig.logs()}"
    assert counts.lost == 0 and counts.dup == 0, why
    tolerance = 0.25  # timer wake-ups and the ledger write
    inner = [b - a for a, b in itertools.pairwise(before)]
    inner += [b - a for a, b in itertools.pairwise(after)]
    assert min(inner) >= SPACING_S - tolerance, why
    assert max_window <= WINDOW_MAX + 1, why
    burst_after_restart = sum(1 for t in after if t < after[0] + SPACING_S - tolerance)
    assert burst_after_restart == 1, why
    assert second.is_alive()
    figures.update(
        row="T26",
        rate=RATE,
        tasks=T26_TASKS,
        restart_s=round(up - stopped, 2),
        min_gap_s=round(min(gaps), 2),
        gap_across_restart_s=round(across, 2) if across is not None else None,
        max_starts_in_20s_window=max_window,
        window_limit=WINDOW_MAX,
        starts_in_first_interval_after_restart=burst_after_restart,
        **counts.figures(),
    )
