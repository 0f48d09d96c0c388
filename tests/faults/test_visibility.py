"""Holding messages longer than the visibility timeout (RELIABILITY.md T15, T16): an ETA
beyond the timeout and an acks_late task running past it. tq renews the ``unacked_index``
score of everything it holds, so no sweep (its own or another worker's) restores a live hold."""

from __future__ import annotations

import time

import pytest
from tests.faults.harness import Rig, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]

VT_S = 3.0


def test_countdown_longer_than_the_visibility_timeout_runs_exactly_once(
    rig: Rig, figures: dict[str, object]
) -> None:
    """T15: visibility timeout 3 s (sweeps every 1.5 s, two workers sweeping), 3 tasks with
    countdown=9: one execution each, none early."""
    app = rig.app(vt=VT_S)
    rig.worker(concurrency=1, vt=VT_S)
    rig.worker(concurrency=1, vt=VT_S)
    sent = time.time()
    results = [app.send_task("fault.work", countdown=9) for _ in range(3)]
    ids = [r.id for r in results]
    counts = rig.drain(app, ids, 60, grace=2 * VT_S)
    assert counts.lost == 0 and counts.dup == 0 and counts.stranded == 0, rig.logs()
    assert rig.ledger.execs(ids) == [1, 1, 1]
    earliest = min(rig.ledger.started_at(i) or 0.0 for i in ids)
    assert earliest >= sent + 9 - 0.5
    figures.update(
        row="T15",
        visibility_timeout_s=VT_S,
        countdown_s=9,
        executions_per_task=rig.ledger.execs(ids),
        **counts.figures(),
    )


def test_acks_late_task_longer_than_the_visibility_timeout_runs_once_with_a_second_worker(
    rig: Rig, figures: dict[str, object]
) -> None:
    """T16: visibility timeout 3 s, one acks_late task of 12 s, a second idle worker
    sweeping: one execution; the lease is renewed while it runs."""
    app = rig.app(vt=VT_S)
    rig.worker(concurrency=1, vt=VT_S)
    res = app.send_task("fault.work_late", kwargs={"seconds": 12})
    wait_until(lambda: rig.ledger.exec_of(res.id) == 1, 30, "the task to start")
    rig.worker(concurrency=1, vt=VT_S)
    client = rig.broker.client()
    index = app.transport.keys.unacked_index
    scores: set[float] = set()
    while rig.ledger.done_of(res.id) == 0:
        rows: list[tuple[bytes, float]] = client.zrange(index, 0, -1, withscores=True)  # type: ignore[assignment]
        scores.update(score for _tag, score in rows)
        time.sleep(0.2)
    client.close()
    counts = rig.drain(app, [res.id], 30, grace=2 * VT_S)
    assert counts.dup == 0 and counts.lost == 0 and counts.stranded == 0, rig.logs()
    assert rig.ledger.exec_of(res.id) == 1
    assert len(scores) >= 3  # renewed about every visibility_timeout / 4
    figures.update(
        row="T16",
        visibility_timeout_s=VT_S,
        task_s=12,
        executions=1,
        lease_refreshes_seen=len(scores) - 1,
        **counts.figures(),
    )
