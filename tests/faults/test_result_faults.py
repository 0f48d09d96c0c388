"""Results under load (RELIABILITY.md T27, T30): result subscriptions must not leak, even
across a forced resubscribe, and a big result must not jam the pool pipe or the controller.

Scaled: T27 runs 2,000 of each kind instead of 10k; T30 returns 32 MiB instead of 50 MB.
"""

from __future__ import annotations

import itertools
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from tests.faults.harness import Rig, is_answering, meta_of, publish_many, wait_until
from tests.faults.row_tasks import MB, ROW_APP

from tq import states

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: T27: tasks of each kind, and the client threads doing ``delay().get()``.
T27_N = 2000
T27_THREADS = 4


def _meta_channels(client: object) -> list[bytes]:
    return list(client.pubsub_channels("celery-task-meta-*"))  # type: ignore[attr-defined]


def _subscribe_calls(client: object) -> int:
    stats = client.info("commandstats")  # type: ignore[attr-defined]
    return int(stats.get("cmdstat_subscribe", {}).get("calls", 0))


@pytest.mark.timeout(150)
def test_result_subscriptions_do_not_leak_across_a_pubsub_client_kill(
    rig: Rig, figures: dict[str, object]
) -> None:
    """T27: 2,000 ``delay().get()`` (4 client threads), 2,000 ``delay()`` never fetched,
    2,000 with ``ignore_result``; then ``CLIENT KILL TYPE pubsub`` and more ``get()`` on the
    same threads. ``PUBSUB CHANNELS celery-task-meta-*`` is back to 0 within 5 s each time,
    resubscribes after the kill are at most one per ``get``, and the client's RSS stays
    roughly flat."""
    app = rig.app()
    rig.worker(concurrency=2)
    admin = rig.broker.client()
    with_result = app.tasks["fault.work_result"]
    ignored = app.tasks["fault.work"]
    process = psutil.Process(os.getpid())
    pool = ThreadPoolExecutor(T27_THREADS, thread_name_prefix="t27-get")

    def get_one(_: int) -> str:
        return str(with_result.delay().get(timeout=30))

    try:
        list(pool.map(get_one, range(50)))  # warm up every thread's subscriber
        rss_before = process.memory_info().rss
        start = time.monotonic()
        got = list(pool.map(get_one, range(T27_N)))
        get_s = time.monotonic() - start
        assert len(got) == T27_N
        never_fetched = [with_result.delay().id for _ in range(T27_N)]
        ignored_ids = [ignored.delay().id for _ in range(T27_N)]
        wait_until(
            lambda: rig.ledger.all_done(never_fetched + ignored_ids),
            90,
            "the fire-and-forget tasks",
            interval=0.2,
        )
        wait_until(lambda: not _meta_channels(admin), 5, "no celery-task-meta-* channel left")
        after_load = len(_meta_channels(admin))
        rss_after = process.memory_info().rss
        assert app.AsyncResult(ignored_ids[0]).state == states.PENDING  # nothing stored
        # (1) kill the subscribers while four gets wait on 1.5 s tasks: each get resubscribes
        # (or is retried by the caller) and still returns its result
        slow = app.tasks["fault.work_result"]

        def slow_get(_: int) -> str:
            return str(slow.delay(seconds=1.5).get(timeout=30))

        waiting = [pool.submit(slow_get, i) for i in range(T27_THREADS)]
        wait_until(lambda: len(_meta_channels(admin)) >= T27_THREADS, 10, "four gets subscribed")
        subs_before_kill = _subscribe_calls(admin)
        killed = admin.client_kill_filter(_type="pubsub", skipme=True)
        errors = []
        for fut in waiting:
            try:
                fut.result(30)
            except Exception as exc:
                errors.append(repr(exc))
        # (2) kill the idle subscriber connections (type normal once nothing is subscribed),
        # then 40 more gets on the same threads
        killed += admin.client_kill_filter(_type="normal", skipme=True)
        gets_after_kill = 40
        assert len(list(pool.map(get_one, range(gets_after_kill)))) == gets_after_kill
        resubscribes = _subscribe_calls(admin) - subs_before_kill - gets_after_kill
        settle = time.monotonic()
        wait_until(
            lambda: not _meta_channels(admin),
            5,
            "no celery-task-meta-* channel left after the kills",
        )
        settle_s = time.monotonic() - settle
        numsub = admin.pubsub_numsub(*[app.backend.key(i) for i in got[:20]])  # type: ignore[union-attr]
    finally:
        pool.shutdown(wait=True)
    assert all(n == 0 for _, n in numsub), numsub
    assert not errors, errors
    assert resubscribes <= T27_THREADS, f"{resubscribes} resubscribes"
    rss_delta_mb = (rss_after - rss_before) / MB
    assert rss_delta_mb < 50, f"client RSS grew {rss_delta_mb:.1f} MB"
    admin.close()
    figures.update(
        row="T27",
        per_kind=T27_N,
        get_per_s=round(T27_N / get_s, 1),
        channels_after_load=after_load,
        clients_killed=killed,
        gets_failed_by_kill=len(errors),
        resubscribes_after_kill=resubscribes,
        channels_after_kill=0,
        channels_zero_after_s=round(settle_s, 2),
        client_rss_delta_mb=round(rss_delta_mb, 1),
    )


#: T30: the big value and the small tasks sent meanwhile.
BIG_MB = 32
SMALL_N = 1000


def _ping_rtts(app: object, nodename: str, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        t = time.monotonic()
        if is_answering(app, nodename, timeout=2.0):  # type: ignore[arg-type]
            out.append(time.monotonic() - t)
        else:
            out.append(float("inf"))
        stop.wait(0.05)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("kind", ["result", "failure"])
def test_big_result_while_the_controller_receives_small_tasks(
    rig: Rig, kind: str, figures: dict[str, object]
) -> None:
    """T30: a task returns a 32 MiB string (or raises an exception whose message is 32 MiB)
    on -c 2 while 1,000 small tasks arrive: no pipe deadlock, every small task runs, the
    controller keeps answering ping (round trips measured during the transfer), and the big
    outcome is stored: SUCCESS with the whole value, or FAILURE."""
    app = rig.app()
    worker = rig.worker(concurrency=2, args=["-A", ROW_APP])
    rtts: list[float] = []
    stop = threading.Event()
    pinger = threading.Thread(target=_ping_rtts, args=(app, worker.nodename, stop, rtts))
    idle_rtts: list[float] = []
    for _ in range(10):
        t = time.monotonic()
        assert is_answering(app, worker.nodename, timeout=2.0)
        idle_rtts.append(time.monotonic() - t)
    start = time.monotonic()
    name = "fault.big_result" if kind == "result" else "fault.big_failure"
    big = app.send_task(name, kwargs={"mb": BIG_MB})
    small = publish_many(app, "fault.work", SMALL_N)
    pinger.start()
    try:
        wait_until(lambda: rig.ledger.done_of(big.id) == 1, 60, "the big task to run")
        want = states.SUCCESS if kind == "result" else states.FAILURE
        wait_until(lambda: meta_of(app, big.id).get("status") == want, 60, "the big outcome stored")
        big_s = time.monotonic() - start
        counts = rig.drain(app, small, 90, grace=0.2)
        drain_s = time.monotonic() - start
    finally:
        stop.set()
        pinger.join(10)
    meta = meta_of(app, big.id)
    why = f"{counts.line()} rtts={rtts[:40]}\n{rig.logs()}"
    assert counts.lost == 0 and counts.dup == 0 and counts.stranded == 0, why
    if kind == "result":
        assert isinstance(meta["result"], str) and len(meta["result"]) == BIG_MB * MB
    else:
        assert "ValueError" in str(meta.get("result")), str(meta)[:300]
    assert worker.is_alive()
    assert rtts and max(rtts) < 5.0, why
    # controller lag: the longest pause between two small-task starts while the big task ran
    # and its outcome came back (one child runs the small tasks back to back meanwhile)
    big_started = rig.ledger.started_at(big.id) or 0.0
    small_starts = sorted(
        t for t in (rig.ledger.started_at(i) for i in small) if t is not None and t >= big_started
    )
    gaps = [b - a for a, b in itertools.pairwise(small_starts)]
    child_rss = [psutil.Process(p).memory_info().rss / MB for p in worker.children()]
    figures.update(
        row="T30",
        kind=kind,
        big_mb=BIG_MB,
        small_tasks=SMALL_N,
        big_stored_s=round(big_s, 2),
        all_small_done_s=round(drain_s, 2),
        ping_idle_median_ms=round(statistics.median(idle_rtts) * 1000, 1),
        ping_during_median_ms=round(statistics.median(rtts) * 1000, 1),
        ping_during_max_ms=round(max(rtts) * 1000, 1),
        pings_during=len(rtts),
        max_small_start_gap_ms=round(max(gaps, default=0.0) * 1000, 1),
        stored_traceback_chars=len(str(meta.get("traceback") or "")),
        worker_rss_mb=round(psutil.Process(worker.pid).memory_info().rss / MB, 1),
        child_rss_mb=[round(r, 1) for r in child_rss],
        **counts.figures(),
    )
