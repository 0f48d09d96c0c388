"""Broker memory pressure and a large ETA backlog (RELIABILITY.md T14, T18).

T14 (a): a private broker with ``maxmemory 64mb`` and ``noeviction``, filled to the brim.
Publishing raises one clear ``TransportError`` (what failed, what to do), not a redis-py
traceback. A worker started on the full broker still starts and pops (``RPOP`` frees memory,
so Redis lets a script that popped first record the message in ``unacked``), runs the tasks,
but can store no result; it then acks nothing (an ack never precedes its result) and drops
nothing. Once memory is raised, results and acks go through: 0 lost.
T14 (b): a broker with ``allkeys-lru`` makes the worker warn at startup.
T18: 20,000 tasks with ``countdown=3600``: the controller holds ``worker_eta_task_limit``
of them, the rest stay in Redis, controller RSS bounded.
"""

from __future__ import annotations

import datetime as dt
import time

import psutil
import pytest
import redis
from tests.faults.harness import Rig, publish_many, wait_until

from tq.app.config import DEFAULTS
from tq.exceptions import TransportError

pytestmark = [pytest.mark.redis, pytest.mark.slow]

MAXMEMORY = 64 * 1024 * 1024


def _fill(client: redis.Redis) -> int:
    """Write filler keys until the server refuses even a 1 KB value; returns how many."""
    n = 0
    for size in (1 << 20, 1 << 16, 1 << 10):
        blob = b"x" * size
        while True:
            try:
                client.set(f"filler:{n}", blob)
            except redis.OutOfMemoryError:
                break
            n += 1
    return n


def test_full_broker_refuses_publish_clearly_and_the_worker_acks_and_drops_nothing(
    rig: Rig, figures: dict[str, object]
) -> None:
    """T14 (a)."""
    app = rig.app()
    ids = publish_many(app, "fault.work_late_result", 199)
    ids.append(app.send_task("fault.work_late_result").id)  # declares the queue first
    client = rig.broker.client()
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", MAXMEMORY)
    fillers = _fill(client)

    with pytest.raises(TransportError) as caught:
        app.send_task("fault.work")
    error = str(caught.value)
    assert type(caught.value) is TransportError
    assert "out of memory" in error and "maxmemory" in error, error
    assert "raise its maxmemory" in error and "refused a LPUSH" in error, error

    w = rig.worker(concurrency=2, wait=False)  # ping replies are writes: none under OOM
    # It runs tasks and cannot write their results.
    wait_until(
        lambda: rig.ledger.exec_count() >= 8 and "Couldn't write" in w.output(),
        40,
        "tasks to run on the full broker",
    )
    seen = {"n": -1, "since": time.monotonic()}

    def settled() -> bool:
        n = rig.ledger.done_count()
        if n != seen["n"]:
            seen.update(n=n, since=time.monotonic())
        return time.monotonic() - seen["since"] > 2.0

    wait_until(settled, 40, "the worker to run what it can")
    assert w.is_alive(), w.output()[-3000:]
    ran = rig.ledger.done_count()
    held = int(client.hlen(app.transport.keys.unacked))
    queued = rig.queue_length(app)
    # Nothing that ran was acked (its result is not stored) and nothing was dropped.
    assert held >= ran and held + queued == len(ids), (ran, held, queued, rig.logs())
    assert used_memory(client) > MAXMEMORY

    raised_at = time.monotonic()
    client.config_set("maxmemory", 0)
    counts = rig.drain(app, ids, 45)
    drained_s = time.monotonic() - raised_at
    assert counts.lost == 0 and counts.stranded == 0 and counts.queued == 0, rig.logs()
    assert counts.dup == 0, rig.logs()
    stored = [app.backend.get_meta(i).get("status") for i in ids[:20]]  # type: ignore[union-attr]
    assert set(stored) == {"SUCCESS"}, stored
    out = w.output()
    assert "Acks and results are going through again" in out
    figures.update(
        row="T14a",
        fillers=fillers,
        publish_error=error,
        ran_while_full=ran,
        held_in_unacked_while_full=held,
        queued_while_full=queued,
        drained_after_raise_s=round(drained_s, 2),
        consumer_errors_logged=out.count("Consumer loop error"),
        housekeeping_errors_logged=out.count("Controller error in _housekeeping"),
        **counts.figures(),
    )


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def test_failures_raised_on_a_full_broker_are_stored_once_memory_is_back(rig: Rig) -> None:
    """T14 (a), failures: acks_late tasks that raise while the broker refuses writes. The
    child cannot store the FAILURE; it hands it to the controller's writer, which retries it,
    and the late ack waits for it. Dropping it instead would ack the message with no result."""
    app = rig.app()
    ids = [app.send_task("fault.leak", args=(f"boom {i}",)).id for i in range(12)]
    client = rig.broker.client()
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", MAXMEMORY)
    _fill(client)
    w = rig.worker(concurrency=2, wait=False, settings={"task_acks_late": True})
    wait_until(lambda: rig.ledger.exec_count() >= len(ids), 40, "every task to run once")
    wait_until(lambda: "Could not store the FAILURE result" in w.output(), 20, "the warning")
    assert all(app.AsyncResult(i).state == "PENDING" for i in ids)
    assert int(client.hlen(app.transport.keys.unacked)) == len(ids), "acked with no result"
    client.config_set("maxmemory", 0)
    wait_until(
        lambda: all(app.AsyncResult(i).state == "FAILURE" for i in ids),
        30,
        "every FAILURE to be stored",
    )
    wait_until(lambda: client.hlen(app.transport.keys.unacked) == 0, 30, "the late acks")
    assert rig.ledger.exec_count() == len(ids), "a task ran twice"


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl", "noeviction"])
def test_worker_warns_at_startup_when_the_broker_can_evict(
    rig: Rig, policy: str, figures: dict[str, object]
) -> None:
    """T14 (b): ``maxmemory-policy`` other than noeviction → one startup warning naming what
    eviction can delete; noeviction → none."""
    client = rig.broker.client()
    client.config_set("maxmemory", MAXMEMORY)
    client.config_set("maxmemory-policy", policy)
    w = rig.worker(concurrency=1)
    lines = [line for line in w.output().splitlines() if "maxmemory-policy" in line]
    if policy == "noeviction":
        assert lines == [], lines
        return
    assert len(lines) == 1, w.output()[-3000:]
    assert f"maxmemory-policy {policy}" in lines[0] and "noeviction" in lines[0]
    if policy.startswith("allkeys"):
        assert "unacked" in lines[0] and "queued messages" in lines[0]
    figures.update(row="T14b", policy=policy, warning=lines[0])


def test_eta_backlog_is_bounded_by_worker_eta_task_limit(
    rig: Rig, figures: dict[str, object]
) -> None:
    """T18 (scaled to 20,000): one worker holds ``worker_eta_task_limit`` ETA tasks, the rest
    stay on the queue; none runs; controller RSS grows by a bounded amount."""
    limit = int(DEFAULTS["worker_eta_task_limit"])
    n = 2 * limit
    w = rig.worker(concurrency=2)
    app = rig.app()
    client = rig.broker.client()
    ctl = psutil.Process(w.pid)
    before = ctl.memory_info().rss
    children_before = [psutil.Process(p).memory_info().rss for p in w.children()]
    eta = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3600)
    ids = publish_many(app, "fault.work", n, eta=eta)
    index = app.transport.keys.unacked_index
    last = {"n": -1, "since": time.monotonic()}

    def settled() -> bool:
        held = int(client.zcard(index))
        if held != last["n"]:
            last.update(n=held, since=time.monotonic())
        return held > 0 and time.monotonic() - last["since"] > 3.0

    wait_until(settled, 50, "the worker to stop taking ETA tasks")
    held = int(client.zcard(index))
    queued = rig.queue_length(app)
    after = ctl.memory_info().rss
    children_after = [psutil.Process(p).memory_info().rss for p in w.children()]
    assert held == limit, (held, queued)
    assert held + queued == n
    assert rig.ledger.exec_count() == 0
    growth_mb = (after - before) / 2**20
    # about 6 KB a held request; 150 MB would mean the limit is not what bounds it
    assert growth_mb < 150, growth_mb
    scheduled = app.control.inspect(destination=[w.nodename], timeout=2.0).scheduled() or {}
    figures.update(
        row="T18",
        sent=len(ids),
        eta_task_limit=limit,
        held_by_controller=held,
        left_in_redis=queued,
        controller_rss_before_mb=round(before / 2**20, 1),
        controller_rss_after_mb=round(after / 2**20, 1),
        children_rss_before_mb=[round(r / 2**20, 1) for r in children_before],
        children_rss_after_mb=[round(r / 2**20, 1) for r in children_after],
        inspect_scheduled=len(scheduled.get(w.nodename, [])),
    )
