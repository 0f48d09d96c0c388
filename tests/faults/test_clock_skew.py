"""Clock skew between hosts (RELIABILITY.md T17).

A worker started with ``TQ_CLOCK_OFFSET=300`` (tq's test hook: ``time.time`` of the whole
process, children included, runs 300 s ahead, as under libfaketime) sweeps next to a healthy
worker. Delivery scores (``pop.lua``, ``renew.lua``) and the sweep's ceiling
(``restore_visible``) all come from the broker's ``TIME``, so the skewed sweep sees the
healthy worker's holds as fresh: 0 duplicates. The skewed worker warns about its clock.

ETAs are different: a producer writes ``eta = its now + countdown`` and a worker fires at
``eta <= its now``, both by the local clock (as Celery). The ETA tests measure that error.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from tests.faults.harness import Rig, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]

VT_S = 6.0
SKEW_S = 300.0


def test_a_skewed_workers_sweep_does_not_restore_what_a_healthy_worker_holds(
    rig: Rig, figures: dict[str, object]
) -> None:
    """Healthy worker: ``-c 2``, 4 acks_late tasks of 7 s (2 running, 2 prefetched; every one
    held longer than the 6 s visibility timeout). Skewed worker (+300 s) sweeps every 3 s the
    whole time: each task runs once."""
    app = rig.app(vt=VT_S)
    healthy = rig.worker(concurrency=2, vt=VT_S)
    ids = [app.send_task("fault.work_late", kwargs={"seconds": 7}).id for _ in range(4)]
    wait_until(lambda: rig.ledger.exec_count() == 2, 30, "the healthy worker to start two")
    assert rig.unacked(app) == 4 and rig.queue_length(app) == 0
    skewed = rig.worker(concurrency=1, vt=VT_S, env={"TQ_CLOCK_OFFSET": str(SKEW_S)})
    started = time.monotonic()
    counts = rig.drain(app, ids, 50, grace=VT_S)
    watched_s = time.monotonic() - started
    assert counts.lost == 0 and counts.dup == 0 and counts.stranded == 0, rig.logs()
    assert rig.ledger.execs(ids) == [1, 1, 1, 1]
    assert {rig.ledger.pid_of(i) for i in ids} <= set(healthy.children()), rig.logs()
    out = skewed.output()
    assert "TQ_CLOCK_OFFSET: this process's clock is shifted by +300.0 s" in out
    warning = next(line for line in out.splitlines() if "ahead of the broker's" in line)
    assert "300." in warning or "299." in warning, warning
    assert "Restored" not in out and "Restored" not in healthy.output()
    figures.update(
        row="T17",
        skew_s=SKEW_S,
        visibility_timeout_s=VT_S,
        skewed_sweeps_at_least=int(watched_s // (VT_S / 2)),
        clock_warning=warning,
        **counts.figures(),
    )


def test_eta_error_equals_the_producers_skew(rig: Rig, figures: dict[str, object]) -> None:
    """A producer whose clock is 6 s ahead sends ``countdown=2``: its ETA is real now + 8 s,
    and a healthy worker runs it then (6 s late). A producer 300 s behind sends
    ``countdown=3``: the ETA is already past, so it runs at once (3 s early; an ETA error can
    never exceed the countdown on that side). Simulated: the producer's ETA is written as
    ``its now + countdown`` (what ``apply_async(countdown=…)`` computes)."""
    app = rig.app()
    rig.worker(concurrency=2)
    real = dt.datetime.now(dt.UTC)
    ahead = app.send_task(
        "fault.work", eta=real + dt.timedelta(seconds=6 + 2)
    )  # producer clock +6 s, countdown 2
    behind = app.send_task(
        "fault.work", eta=real + dt.timedelta(seconds=-SKEW_S + 3)
    )  # producer clock -300 s, countdown 3
    sent = real.timestamp()
    wait_until(
        lambda: rig.ledger.done_of(ahead.id) and rig.ledger.done_of(behind.id),
        40,
        "both ETA tasks",
        interval=0.05,
    )
    error_ahead = (rig.ledger.started_at(ahead.id) or 0.0) - (sent + 2)
    error_behind = (rig.ledger.started_at(behind.id) or 0.0) - (sent + 3)
    assert 5.5 <= error_ahead <= 8.0, error_ahead
    assert -3.5 <= error_behind <= -1.0, error_behind
    figures.update(
        row="T17-eta",
        producer_ahead_s=6,
        error_ahead_s=round(error_ahead, 2),
        producer_behind_s=-SKEW_S,
        error_behind_s=round(error_behind, 2),
    )


def test_a_skewed_worker_fires_etas_by_its_own_clock(rig: Rig, figures: dict[str, object]) -> None:
    """A worker whose clock is 300 s ahead runs a ``countdown=20`` task at once (20 s early,
    bounded by the countdown); it warned about its clock at startup."""
    app = rig.app()
    skewed = rig.worker(concurrency=1, env={"TQ_CLOCK_OFFSET": str(SKEW_S)})
    sent = time.time()
    res = app.send_task("fault.work", countdown=20)
    wait_until(lambda: rig.ledger.done_of(res.id), 15, "the ETA task on the skewed worker")
    error = (rig.ledger.started_at(res.id) or 0.0) - SKEW_S - (sent + 20)
    # started_at is written by the skewed child, so it carries the +300 s; subtract it
    assert -21.0 <= error <= -17.0, error
    assert "ahead of the broker's" in skewed.output()
    figures.update(row="T17-worker-eta", worker_skew_s=SKEW_S, countdown_s=20, error_s=error)
