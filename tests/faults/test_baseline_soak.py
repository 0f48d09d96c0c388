"""No faults at all (RELIABILITY.md T01 and T31): the exactly-once baseline and a bounded soak.

T01 drains a few thousand no-op tasks through ``tq-console --worker -c 2`` (and through two
such workers) and checks the ledger: every id ran exactly once, nothing stranded; it reports
throughput and the controller's RSS at the start and the end.

T31 is the soak: a longer drain with task events on while the test samples the controller's
RSS and the broker's key counts (``unacked``, ``unacked_index``, pub/sub channels and
patterns, ``_kombu.*`` keys, ``used_memory``). The suite runs a bounded version (about 60 s of
work); ``TQ_SOAK_SECONDS=3600 python -m pytest tests/faults/test_baseline_soak.py -k soak -s``
runs it for an hour (it then publishes in waves so the queue never holds more than
``SOAK_BACKLOG`` messages), and ``TQ_SOAK_TASKS`` changes the bounded run's task count.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil
import pytest
import redis
from tests.faults.harness import Rig, Worker, publish_many

from tq import App
from tq.exceptions import ProtocolError
from tq.protocol.events import parse_event_message

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: T01's size per worker count (RELIABILITY.md asks for 100k; scaled to stay under a minute).
BASELINE_TASKS = int(os.environ.get("TQ_BASELINE_TASKS", "6000"))
#: The bounded soak's task count (events on): about a minute of work on a loaded 2-core box.
SOAK_TASKS = int(os.environ.get("TQ_SOAK_TASKS", "20000"))
#: When set, the soak runs for this many seconds instead of draining SOAK_TASKS.
SOAK_SECONDS = float(os.environ.get("TQ_SOAK_SECONDS", "0") or 0)
#: The long soak tops the queue up to this many messages at a time.
SOAK_BACKLOG = 5000
#: RSS growth allowed between the end of the warm-up (first quarter) and the end of the
#: bounded soak (MiB). A leak of a few hundred bytes per task would show as several MiB here.
RSS_GROWTH_LIMIT_MB = 8.0


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


@pytest.mark.timeout(180)
@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
def test_exactly_once_baseline(rig: Rig, workers: int, figures: dict[str, object]) -> None:
    """T01: BASELINE_TASKS no-op tasks, one or two ``-c 2`` workers, no fault: every id runs
    exactly once (ledger), 0 lost, 0 dup, 0 stranded, nothing left queued."""
    app = rig.app()
    started = [rig.worker(concurrency=2) for _ in range(workers)]
    rss_start = [round(rss_mb(w.pid), 1) for w in started]
    wall0 = time.time()
    ids = publish_many(app, "fault.work", BASELINE_TASKS)
    published_s = time.time() - wall0
    counts = rig.drain(app, ids, 150, grace=1.0)
    # drain() polls and adds a grace second: time the run to the last task start instead
    elapsed = max(float(v) for v in rig.ledger.client.hvals("started_at")) - wall0
    why = f"{counts.line()}\n{rig.logs()}"
    assert counts.lost == 0, why
    assert counts.dup == 0, why
    assert counts.stranded == 0, why
    assert counts.queued == 0, why
    assert all(e == 1 for e in rig.ledger.execs(ids)), why
    assert all(w.is_alive() for w in started)
    figures.update(
        row="T01",
        workers=workers,
        concurrency=2,
        publish_s=round(published_s, 2),
        drain_s=round(elapsed, 1),
        tasks_per_s=round(len(ids) / elapsed),
        controller_rss_start_mb=rss_start,
        controller_rss_end_mb=[round(rss_mb(w.pid), 1) for w in started],
        **counts.figures(),
    )


# -- T31 ---------------------------------------------------------------------------------------
@dataclass
class BrokerFigures:
    unacked: int
    unacked_index: int
    channels: int
    patterns: int
    kombu_keys: int
    keys: int
    used_memory_mb: float

    @classmethod
    def read(cls, client: redis.Redis, app: App) -> BrokerFigures:
        keys = app.transport.keys
        info = client.info("memory")
        return cls(
            unacked=int(client.hlen(keys.unacked)),
            unacked_index=int(client.zcard(keys.unacked_index)),
            channels=len(client.pubsub_channels()),
            patterns=int(client.pubsub_numpat()),
            kombu_keys=sum(1 for _ in client.scan_iter("_kombu.*", count=1000)),
            keys=int(client.dbsize()),
            used_memory_mb=round(int(info["used_memory"]) / 2**20, 2),
        )


@dataclass
class Sampler:
    """Samples the controller's RSS and the broker's memory once a second in a thread."""

    pid: int
    client: redis.Redis
    samples: list[tuple[float, float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(1.0):
            try:
                used = int(self.client.info("memory")["used_memory"]) / 2**20
                self.samples.append((time.monotonic() - t0, rss_mb(self.pid), used))
            except (psutil.Error, redis.RedisError):
                return

    def stop(self) -> None:
        self._stop.set()


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) points, in MiB per hour."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    if not den:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / den * 3600


@pytest.fixture
def event_counter(rig: Rig) -> Iterator[list[int]]:
    """Counts the task events published on the broker (``task.multi`` batches unpacked):
    proof that events are on. Counts ``task-succeeded`` only, one per task."""
    client = rig.broker.client(socket_timeout=None)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("*celeryev*")
    seen = [0]
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                msg = pubsub.get_message(timeout=0.5)
            except redis.RedisError:
                return
            if msg is None or msg["type"] != "pmessage":
                continue
            with contextlib.suppress(ProtocolError):
                _headers, events = parse_event_message(msg["data"])
                seen[0] += sum(1 for e in events if e.get("type") == "task-succeeded")

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield seen
    stop.set()
    thread.join(5)
    pubsub.close()
    client.close()


def _soak_publish(rig: Rig, app: App, worker: Worker) -> list[str]:
    """Publish SOAK_TASKS at once, or (TQ_SOAK_SECONDS) keep the queue topped up for that
    long; returns every id published."""
    if not SOAK_SECONDS:
        return publish_many(app, "fault.work", SOAK_TASKS)
    ids: list[str] = []
    deadline = time.monotonic() + SOAK_SECONDS
    while time.monotonic() < deadline:
        assert worker.is_alive(), worker.output()[-3000:]
        backlog = rig.queue_length(app)
        if backlog < SOAK_BACKLOG // 2:
            ids += publish_many(app, "fault.work", SOAK_BACKLOG - backlog)
        time.sleep(1.0)
    return ids


@pytest.mark.timeout(max(300, int(SOAK_SECONDS * 1.5)))
def test_soak_controller_rss_and_broker_keys_do_not_grow(
    rig: Rig, event_counter: list[int], figures: dict[str, object]
) -> None:
    """T31 (bounded): SOAK_TASKS no-op tasks with task events on through one ``-c 2``
    worker. The controller's RSS after the warm-up stays within RSS_GROWTH_LIMIT_MB; after
    the drain the broker holds the same keys, channels and patterns as before it (nothing in
    ``unacked``), and every id ran exactly once."""
    app = rig.app()
    worker = rig.worker(concurrency=2, args=["-E"])
    client = rig.broker.client()
    # warm up (imports, pools, first events) so the "before" figures are the steady state
    warm = publish_many(app, "fault.work", 200)
    rig.drain(app, warm, 60, grace=0.5)
    before = BrokerFigures.read(client, app)
    rss_before = rss_mb(worker.pid)
    sampler = Sampler(worker.pid, rig.broker.client())
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    t0 = time.monotonic()
    ids = _soak_publish(rig, app, worker)
    counts = rig.drain(app, ids, max(240.0, SOAK_SECONDS), grace=1.0)
    elapsed = time.monotonic() - t0
    sampler.stop()
    thread.join(5)
    after = BrokerFigures.read(client, app)
    rss_after = rss_mb(worker.pid)
    client.close()
    samples = sampler.samples
    steady = [s for s in samples if s[0] >= elapsed / 4] or samples
    rss_slope = slope_per_hour([(t, r) for t, r, _ in steady])
    mem_slope = slope_per_hour([(t, m) for t, _, m in steady])
    rss_growth = (steady[-1][1] - steady[0][1]) if steady else 0.0
    why = f"{counts.line()} before={before} after={after}\n{worker.output()[-3000:]}"
    assert counts.lost == 0 and counts.dup == 0 and counts.stranded == 0, why
    assert worker.is_alive(), why
    assert event_counter[0] >= len(ids), f"only {event_counter[0]} task-succeeded events"
    assert after.unacked == 0 and after.unacked_index == 0, why
    assert after.channels <= before.channels, why
    assert after.patterns <= before.patterns, why
    assert after.kombu_keys <= before.kombu_keys, why
    assert after.keys <= before.keys, why
    assert rss_growth < RSS_GROWTH_LIMIT_MB, f"RSS grew {rss_growth:.1f} MiB: {samples}"
    figures.update(
        row="T31",
        tasks=len(ids),
        seconds=round(elapsed, 1),
        tasks_per_s=round(len(ids) / elapsed),
        task_succeeded_events=event_counter[0],
        rss_before_mb=round(rss_before, 1),
        rss_after_mb=round(rss_after, 1),
        rss_growth_after_warmup_mb=round(rss_growth, 2),
        rss_slope_mb_per_h=round(rss_slope, 1),
        redis_used_memory_slope_mb_per_h=round(mem_slope, 1),
        broker_before=before.__dict__,
        broker_after=after.__dict__,
        **counts.figures(),
    )
