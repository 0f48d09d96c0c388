"""A publish racing a warm shutdown (RELIABILITY.md T09, celery#7950 / kombu#1733): start a
worker, let it go idle (the consumer blocks in its ``BLMOVE`` peek), then stop it and publish
one message within ±5 ms of the stop. Repeated; afterwards every message must have run exactly
once or still be on the queue (restored): none may be lost, and none may be left in
``unacked`` with nobody holding it (with the default hour of visibility timeout that is a
message gone for an hour).

Scaled: RELIABILITY.md asks for 200 runs; the in-process runs here (``Runtime`` with a thread
pool, the same consumer, controller and shutdown code as ``tq-console --worker``) do
``RACE_RUNS`` and the subprocess runs (SIGTERM, as the row says) ``SIGTERM_RUNS``, so each test
stays well under a minute on a loaded 2-core machine.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import statistics
import threading
import time
import uuid
from collections import Counter

import pytest
import redis
from tests.faults.harness import Rig, wait_until

from tq import App
from tq.worker.runtime import Runtime, RuntimeOptions

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: In-process start / idle / stop+publish rounds.
RACE_RUNS = 60
#: Worker subprocess rounds (each costs a process start).
SIGTERM_RUNS = 8
#: The consumer's longest peek in the in-process rounds (a stop waits for it to return).
IDLE_WAIT_S = 0.05
#: The publish lands this far (ms) before or after the stop begins, uniformly.
JITTER_MS = 5.0
#: A worker subprocess polls for a requested stop every 0.5 s, so its shutdown begins up to
#: 0.5 s after the SIGTERM: every other subprocess round publishes up to this many ms after it.
LATE_MS = 600.0


def _blocked_in_peek(client: redis.Redis) -> bool:
    """A connection of the worker is blocked in the consumer's BLMOVE peek (idle)."""
    return any(
        c.get("cmd") == "blmove" and "b" in str(c.get("flags", "")) for c in client.client_list()
    )


def _race(stop: threading.Thread, publish: App, task_id: str, offset_ms: float) -> None:
    """Start ``stop`` and publish ``task_id`` ``offset_ms`` apart (negative: publish first).
    The short sleeps place the two events; nothing waits on them for an outcome."""
    if offset_ms < 0:
        publish.send_task("fault.work", task_id=task_id)
        time.sleep(-offset_ms / 1000)
        stop.start()
    else:
        stop.start()
        time.sleep(offset_ms / 1000)
        publish.send_task("fault.work", task_id=task_id)


def _where(rig: Rig, app: App, client: redis.Redis, task_id: str) -> str:
    """Where a message is right after its worker stopped: ``ran``, ``queued`` (never taken),
    ``restored`` (popped, then given back by the shutdown), ``unacked`` or ``nowhere``."""
    if rig.ledger.exec_of(task_id):
        return "ran"
    raw = client.lindex(app.transport.keys.queue("celery"), -1)
    if raw is not None:
        headers = json.loads(raw).get("headers") or {}
        return "restored" if headers.get("redelivered") else "queued"
    if client.hlen(app.transport.keys.unacked):
        return "unacked"
    return "nowhere"


def _drain_and_count(
    rig: Rig, app: App, ids: list[str], client: redis.Redis
) -> tuple[Counter[int], int, int, int]:
    """Run one more worker until everything left is done (or 30 s); returns the number of
    executions per message (as a histogram), the ids never done, and the queue length and
    ``unacked`` size afterwards."""
    runtime = Runtime(
        app,
        RuntimeOptions(
            pool="threads",
            concurrency=2,
            hostname=f"drain-{uuid.uuid4().hex[:6]}@%h",
            install_signal_handlers=False,
            remote_control=False,
        ),
    )
    runtime.start()
    try:
        with contextlib.suppress(AssertionError):
            wait_until(lambda: rig.ledger.all_done(ids), 30, "every message to run", interval=0.05)
    finally:
        runtime.stop(10)
    execs = Counter(rig.ledger.execs(ids))
    lost = sum(1 for done in rig.ledger.dones(ids) if not done)
    queued = app.transport.queue_length("celery")
    return execs, lost, queued, int(client.hlen(app.transport.keys.unacked))


@pytest.mark.timeout(120)
def test_publish_within_5ms_of_a_warm_shutdown_is_never_lost(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, figures: dict[str, object]
) -> None:
    """T09, in process: ``RACE_RUNS`` rounds of start, idle, ``Runtime.stop()`` and one publish
    within ±5 ms. After each stop the message has run, is on the queue, and never sits in
    ``unacked``; after a final drain every message has run exactly once."""
    monkeypatch.setenv("TQ_FAULT_LEDGER", rig.ledger_server.url())
    publisher = rig.app()
    publisher.transport.declare_queue("celery")
    client = rig.broker.client()
    rng = random.Random(7950)
    ids: list[str] = []
    outcomes: Counter[str] = Counter()
    stop_s: list[float] = []
    started = time.monotonic()
    for n in range(RACE_RUNS):
        app = rig.app(transport={"idle_wait": IDLE_WAIT_S})
        runtime = Runtime(
            app,
            RuntimeOptions(
                pool="threads",
                concurrency=2,
                hostname=f"race{n}-{uuid.uuid4().hex[:6]}@%h",
                install_signal_handlers=False,
                remote_control=False,
                task_events=False,
            ),
        )
        runtime.start()
        wait_until(lambda: _blocked_in_peek(client), 10, "the consumer to block in its peek")
        task_id = f"t09-{n}-{uuid.uuid4().hex[:8]}"
        ids.append(task_id)
        stopper = threading.Thread(target=runtime.stop, args=(10.0,), name="t09-stop")
        at = time.monotonic()
        _race(stopper, publisher, task_id, rng.uniform(-JITTER_MS, JITTER_MS))
        stopper.join(30)
        assert not stopper.is_alive(), f"round {n}: stop() did not return"
        stop_s.append(time.monotonic() - at)
        where = _where(rig, app, client, task_id)
        outcomes[where] += 1
        assert where in ("ran", "queued", "restored"), f"round {n}: the message is {where}"
        app.close()
    race_s = time.monotonic() - started
    execs, lost, queued, unacked = _drain_and_count(rig, publisher, ids, client)
    client.close()
    figures.update(
        row="T09",
        runs=RACE_RUNS,
        mode="in-process Runtime.stop()",
        ran_before_stop_returned=outcomes["ran"],
        left_on_queue=outcomes["queued"],
        restored_by_the_shutdown=outcomes["restored"],
        stranded_in_unacked=outcomes["unacked"],
        lost=lost,
        executions=dict(execs),
        stop_s_median=round(statistics.median(stop_s), 2),
        stop_s_max=round(max(stop_s), 2),
        race_s=round(race_s, 1),
    )
    assert lost == 0, f"{lost} message(s) never ran"
    assert set(execs) == {1}, f"executions per message: {dict(execs)}"
    assert queued == 0 and unacked == 0


@pytest.mark.timeout(180)
def test_publish_within_5ms_of_sigterm_is_never_lost(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, figures: dict[str, object]
) -> None:
    """T09 as the row says it: a ``tq-console --worker`` subprocess, idle, SIGTERM and one
    publish within ±5 ms (even rounds) or up to ``LATE_MS`` after it, while the shutdown runs
    (odd rounds); ``SIGTERM_RUNS`` rounds (each starts a process)."""
    publisher = rig.app()
    publisher.transport.declare_queue("celery")
    client = rig.broker.client()
    rng = random.Random(1733)
    ids: list[str] = []
    outcomes: Counter[str] = Counter()
    for n in range(SIGTERM_RUNS):
        worker = rig.worker(concurrency=1)
        wait_until(lambda: _blocked_in_peek(client), 10, "the consumer to block in its peek")
        task_id = f"t09s-{n}-{uuid.uuid4().hex[:8]}"
        ids.append(task_id)
        term = threading.Thread(target=worker.signal, args=(signal.SIGTERM,), name="t09-term")
        offset = rng.uniform(-JITTER_MS, JITTER_MS) if n % 2 == 0 else rng.uniform(0, LATE_MS)
        _race(term, publisher, task_id, offset)
        term.join(10)
        code = worker.wait(30)
        assert code == 0, f"round {n}: exit {code}\n{worker.output()[-3000:]}"
        where = _where(rig, publisher, client, task_id)
        outcomes[where] += 1
        assert where in ("ran", "queued", "restored"), f"round {n}: {where}\n{worker.output()}"
    monkeypatch.setenv("TQ_FAULT_LEDGER", rig.ledger_server.url())  # the in-process drain
    execs, lost, queued, unacked = _drain_and_count(rig, publisher, ids, client)
    client.close()
    figures.update(
        row="T09",
        runs=SIGTERM_RUNS,
        mode="tq-console --worker, SIGTERM",
        ran_before_exit=outcomes["ran"],
        left_on_queue=outcomes["queued"],
        restored_by_the_shutdown=outcomes["restored"],
        lost=lost,
        executions=dict(execs),
    )
    assert lost == 0, f"{lost} message(s) never ran"
    assert set(execs) == {1}, f"executions per message: {dict(execs)}"
    assert queued == 0 and unacked == 0
