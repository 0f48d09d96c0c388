#!/usr/bin/env python
"""Per-call costs of the steps one task goes through, each timed alone in one thread.

    python tests/bench/micro.py

The drain and enqueue rates of bench.py move with the machine's load; these move much less
(each figure is the best of several repeats, in CPU time of this process). They put a price
on each step of tq's path (producer, controller, child, Redis calls) beside Huey's and a bare
redis-py call, so a proposed change can be costed before it is made. Uses a private
redis-server like bench.py; imports tq internals, so a step that changed shape shows "n/a".
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench

REPEATS = 5


def cost(fn: Callable[[], Any], n: int, per: int = 1) -> float:
    """Best CPU µs per item over REPEATS runs of ``n`` calls, each call handling ``per`` items."""
    best = float("inf")
    for _ in range(REPEATS):
        t = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t) / (n * per) * 1e6)
    return best


def wall(fn: Callable[[], Any], n: int, per: int = 1) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / (n * per) * 1e6)
    return best


def main() -> int:  # noqa: C901 - one straight list of measurements
    workdir = Path(tempfile.mkdtemp(prefix="tq-micro-"))
    server = bench.Server(bench.server_binary(None), workdir)
    port = server.port
    os.environ.update(bench.SYSTEMS["tq"].env(port))
    os.environ["BENCH_HUEY_URL"] = f"redis://127.0.0.1:{port}/5"
    rows: list[tuple[str, str, float | None]] = []

    def row(group: str, what: str, fn: Callable[[], float]) -> None:
        try:
            v: float | None = fn()
        except Exception as exc:
            print(f"  {what}: n/a ({exc!r})", file=sys.stderr)
            v = None
        rows.append((group, what, v))
        shown = "n/a" if v is None else f"{v:8.1f}"
        print(f"{group:10s} {shown} µs  {what}", flush=True)

    try:
        import bench_huey
        import bench_tq
        import redis

        r = redis.Redis(port=port, db=1)
        r.ping()
        app = bench_tq.app
        payload = b"x" * 890

        # -- Redis round trips from redis-py (CPU of this process, and wall) -------------------
        row("redis", "PING, CPU", lambda: cost(r.ping, 2000))
        row("redis", "PING, wall (round trip)", lambda: wall(r.ping, 2000))
        row("redis", "LPUSH 890 B, CPU", lambda: cost(lambda: r.lpush("m.q", payload), 2000))
        r.delete("m.q")

        def pipe_lpush(n: int) -> None:
            p = r.pipeline(transaction=False)
            for _ in range(n):
                p.lpush("m.q", payload)
            p.execute()

        row(
            "redis",
            "LPUSH in pipelines of 100, CPU per item",
            lambda: cost(lambda: pipe_lpush(100), 50, 100),
        )
        r.delete("m.q")

        def multi_ack(n: int) -> None:
            p = r.pipeline(transaction=True)
            tags = [str(i) for i in range(n)]
            p.zrem("m.idx", *tags)
            p.hdel("m.h", *tags)
            p.execute()

        row(
            "redis",
            "ack batch of 1 (MULTI ZREM HDEL EXEC), CPU",
            lambda: cost(lambda: multi_ack(1), 2000),
        )
        row("redis", "ack batch of 8, CPU per tag", lambda: cost(lambda: multi_ack(8), 1000, 8))

        # -- producer ----------------------------------------------------------------------------
        transport = app.transport
        orig_publish, orig_declare = transport.publish, transport.declare_queue
        transport.publish = lambda *a, **k: 1  # type: ignore[method-assign]
        transport.declare_queue = lambda *a, **k: None  # type: ignore[method-assign]
        try:
            row(
                "producer",
                "tq noop.delay() without the LPUSH",
                lambda: cost(bench_tq.noop.delay, 3000),
            )
            from tq.protocol.message import TaskSpec, build_task, origin

            spec = TaskSpec(name="bench.noop", id=str(uuid.uuid4()))
            row("producer", "tq build_task(spec)", lambda: cost(lambda: build_task(spec), 3000))
            row("producer", "tq origin() (gethostname per message)", lambda: cost(origin, 20000))
            row("producer", "uuid4() as str", lambda: cost(lambda: str(uuid.uuid4()), 20000))
        finally:
            transport.publish, transport.declare_queue = orig_publish, orig_declare
        row("producer", "tq noop.delay() with the LPUSH", lambda: cost(bench_tq.noop.delay, 2000))
        r.delete("celery")

        storage = bench_huey.huey.storage
        orig_enqueue = storage.enqueue
        storage.enqueue = lambda *a, **k: None  # type: ignore[method-assign]
        try:
            row("producer", "Huey noop() without the LPUSH", lambda: cost(bench_huey.noop, 3000))
        finally:
            storage.enqueue = orig_enqueue
        row("producer", "Huey noop() with the LPUSH", lambda: cost(bench_huey.noop, 2000))
        server.db(5).flushdb()

        # -- controller steps ------------------------------------------------------------------
        r.delete("celery")
        bench_tq.noop.delay()
        raw = r.lindex("celery", 0)
        assert raw is not None
        from tq.protocol.envelope import parse_envelope
        from tq.protocol.message import TaskHeaders

        row(
            "controller",
            "parse_envelope (json.loads + b64decode)",
            lambda: cost(lambda: parse_envelope(raw), 5000),
        )
        env = parse_envelope(raw)
        row(
            "controller",
            "TaskHeaders.parse",
            lambda: cost(lambda: TaskHeaders.parse(env.headers), 5000),
        )
        row(
            "controller",
            "json.loads of the envelope alone",
            lambda: cost(lambda: json.loads(raw), 5000),
        )
        try:
            from tq.worker.events import WorkerEvents

            ev = WorkerEvents(app, "bench@host", False)
            row(
                "controller",
                "3 x WorkerEvents.task (events off)",
                lambda: cost(
                    lambda: (
                        ev.task("task-received", "i", "n", "()", a=1, b=2, c=3, d=4, e=5, f=6, g=7),
                        ev.task("task-started", "i", "n", ""),
                        ev.task("task-succeeded", "i", "n", "1", result="1", runtime=0.1),
                    ),
                    5000,
                ),
            )
        except Exception as exc:
            print(f"  events: {exc!r}", file=sys.stderr)
        from tq import signals

        row(
            "controller",
            "signals.task_received.send (no receivers)",
            lambda: cost(lambda: signals.task_received.send(sender=None, request=None), 20000),
        )
        from tq.worker.pool import ipc

        headers = env.headers
        job = (
            "tag",
            (
                "id",
                "bench.noop",
                headers,
                env.body,
                env.content_type,
                env.content_encoding,
                env.delivery_info,
                {"priority": 0, "reply_to": "", "correlation_id": "id"},
            ),
        )
        row("controller", "ipc.dumps(job) (pickle)", lambda: cost(lambda: ipc.dumps(job), 20000))
        blob = ipc.dumps(job)
        row("child", "ipc.loads(job) (unpickle)", lambda: cost(lambda: ipc.loads(blob), 20000))
        import multiprocessing as mp

        a, b = mp.Pipe(duplex=True)
        row(
            "controller",
            "pipe send_bytes + recv_bytes of the job (same process)",
            lambda: cost(lambda: (a.send_bytes(blob), b.recv_bytes()), 20000),
        )
        a.close()
        b.close()

        pop = transport.scripts.pop
        keys = [
            transport.keys.unacked,
            transport.keys.unacked_index,
            transport.keys.dead,
            transport.keys.dead_seq,
            *(k for k, _ in transport.keys.pop_order(["celery"])),
        ]
        args_q = [q for _, q in transport.keys.pop_order(["celery"])]

        def fill(n: int) -> None:
            p = r.pipeline(transaction=False)
            for _ in range(n):
                p.lpush("celery", raw)
            p.execute()

        for batch in (1, 8, 64):

            def pop_batch(batch: int = batch) -> None:
                fill(batch)
                pop(keys=keys, args=[batch, *args_q])

            fill_cost = cost(lambda batch=batch: fill(batch), 200, batch)
            row(
                "controller",
                f"pop.lua batch of {batch}, CPU per message (less the refill)",
                lambda batch=batch, fill_cost=fill_cost: cost(pop_batch, 200, batch) - fill_cost,
            )
        r.delete(transport.keys.unacked, transport.keys.unacked_index)
        row(
            "controller",
            "pop.lua on an empty queue (4 priority lists)",
            lambda: cost(lambda: pop(keys=keys, args=[8, *args_q]), 2000),
        )

        backend = app.backend
        from tq.backend import meta as m

        text = m.dumps_meta(m.build_meta("x", "SUCCESS", 1))
        for batch in (1, 8):
            items = [(str(uuid.uuid4()), text) for _ in range(batch)]
            row(
                "controller",
                f"backend.store_many batch of {batch}, CPU per result",
                lambda items=items, batch=batch: cost(
                    lambda: backend.store_many(items), 300, batch
                ),
            )
        row(
            "child",
            "backend.store_result (one EVALSHA)",
            lambda: cost(lambda: backend.store_result(str(uuid.uuid4()), 1, "SUCCESS"), 2000),
        )
        row(
            "child",
            "build_meta + dumps_meta",
            lambda: cost(lambda: m.dumps_meta(m.build_meta("x", "SUCCESS", 1)), 5000),
        )
        try:
            from tq.worker import trace

            ctx = trace.child_init(app, "bench@host", 4096)
            payload_ = job[1]
            row(
                "child",
                "trace.run_job (deferred result, no Redis)",
                lambda: cost(lambda: trace.run_job(ctx, payload_), 5000),
            )
            ctx0 = trace.child_init(app, "bench@host", 0)
            row(
                "child",
                "trace.run_job (stores its result: one EVALSHA)",
                lambda: cost(lambda: trace.run_job(ctx0, payload_), 2000),
            )
        except Exception as exc:
            print(f"  trace: {exc!r}", file=sys.stderr)
        # Huey's worker step for comparison: dequeue is a BRPOP, execute stores a result
        huey = bench_huey.huey
        for _ in range(2000):
            bench_huey.noop()
        row(
            "child",
            "Huey: dequeue + execute + store (2 round trips and more)",
            lambda: cost(lambda: huey.execute(huey.dequeue()), 300),
        )
    finally:
        server.stop()
    out = bench.RESULTS / ("micro-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + ".json")
    if "--write" in sys.argv:
        out.write_text(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "git": bench.git_head(),
                    "loadavg": os.getloadavg(),
                    "rows": rows,
                },
                indent=1,
            )
        )
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
