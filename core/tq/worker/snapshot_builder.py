"""Builds ``Snapshot`` values from a running Runtime: in-memory state copied under the
controller's lock, plus one pipelined round trip to Redis (queue lengths, unacked count and
oldest entries, dead letters). No key scans; every list is bounded.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from tq.transport.connection import mask_url
from tq.worker import deadletter
from tq.worker.snapshot import (
    BrokerHealth,
    BucketInfo,
    ChildInfo,
    QueueInfo,
    RequestInfo,
    Snapshot,
    TimerEntry,
    UnackedEntry,
    UnackedInfo,
)

if TYPE_CHECKING:
    from tq.worker.request import Request
    from tq.worker.runtime import Runtime

#: Unacked entries looked at per snapshot (the oldest ones).
UNACKED_SAMPLE = 50
#: Requests listed per table.
TABLE_MAX = 200


def request_info(req: Request, hostname: str) -> RequestInfo:
    extra = req.extra
    finished = extra.get("finished_at")
    return RequestInfo(
        task_id=req.id,
        name=req.name,
        state=req.state,
        args_repr=req.args_repr(),
        kwargs_repr=req.kwargs_repr(),
        queue=req.queue,
        received_at=req.received_at,
        started_at=req.started_at,
        finished_at=finished,
        runtime=extra.get("runtime")
        or (finished - req.started_at if finished and req.started_at else None),
        worker_pid=req.worker_pid,
        retries=req.headers.retries,
        eta=req.eta,
        result_repr=extra.get("result"),
        exception=extra.get("exception"),
        traceback=extra.get("traceback"),
        worker=hostname,
    )


def _redis_part(rt: Runtime, held: set[str]) -> dict[str, Any]:
    transport = rt.app.transport
    keys = transport.keys
    pipe = transport.client.pipeline(transaction=False)
    for q in rt.queues:
        for key in keys.queue_keys(q):
            pipe.llen(key)
    pipe.zcard(keys.unacked_index)
    pipe.zrange(keys.unacked_index, 0, UNACKED_SAMPLE - 1, withscores=True)
    pipe.llen(keys.dead)
    pipe.lrange(keys.dead, 0, deadletter.SNAPSHOT_MAX - 1)
    pipe.time()
    start = time.perf_counter()
    out = pipe.execute()
    latency = (time.perf_counter() - start) * 1000
    n = len(keys.steps)
    lengths = {q: out[i * n : (i + 1) * n] for i, q in enumerate(rt.queues)}
    base = len(rt.queues) * n
    count, oldest, dead_count, dead_rows, (secs, micros) = out[base : base + 5]
    now = secs + micros / 1e6
    tags = [t.decode() if isinstance(t, bytes) else t for t, _ in oldest]
    entries = transport.unacked_entries(tags) if tags else []
    return {
        "lengths": lengths,
        "count": count,
        "oldest": [(t, float(s)) for t, (_, s) in zip(tags, oldest, strict=True)],
        "entries": entries,
        "dead_count": dead_count,
        "dead": [deadletter.to_info(*_split(r)) for r in dead_rows],
        "now": now,
        "latency": latency,
    }


def _split(row: bytes) -> tuple[dict[str, Any], bytes]:
    from tq.transport.redis import split_dead

    return split_dead(row)


def _unacked(
    rt: Runtime, part: dict[str, Any], held: set[str]
) -> tuple[UnackedInfo, dict[str, list[float]]]:
    vt = rt.app.transport.visibility_timeout
    now = part["now"]
    rows: list[UnackedEntry] = []
    by_queue: dict[str, list[float]] = {}
    for (tag, score), raw in zip(part["oldest"], part["entries"], strict=True):
        task_id = name = None
        queue = "?"
        if raw:
            try:
                env, _exchange, routing_key = json.loads(raw)
                headers = env.get("headers") or {}
                task_id, name, queue = headers.get("id"), headers.get("task"), routing_key
            except (ValueError, TypeError, AttributeError):
                pass
        age = max(now - score, 0.0)
        by_queue.setdefault(queue, []).append(age)
        rows.append(UnackedEntry(tag, task_id, name, queue, age, vt - age, tag in held))
    oldest = rows[0].age if rows else None
    return UnackedInfo(int(part["count"]), oldest, vt, tuple(rows)), by_queue


def build_snapshot(rt: Runtime) -> Snapshot:
    c = rt.controller
    now = time.time()
    if c is None:
        return Snapshot(now, rt.hostname, rt.pool.name, rt.pool.size(), 0, rt.state)
    with c.lock:
        reserved = list(c.reserved)[:TABLE_MAX]
        running = dict(c.active)  # delivery tag → request; pool jobs are keyed by tag
        active = list(running.values())
        timers = [r for _, r in c.timer][:TABLE_MAX]
        recent = list(c.recent)[-TABLE_MAX:]
        buckets = [
            (name, b.label, b.capacity, b.level(time.monotonic()), len(b.waiting))
            for name, b in c.buckets.items()
        ]
        revoked = tuple(c.revoked.ids(TABLE_MAX))
    held = set(c.held_tags())
    broker = BrokerHealth(True, None, None, mask_url(rt.app.conf.broker_url))
    part: dict[str, Any] | None = None
    try:
        part = _redis_part(rt, held)
        broker = BrokerHealth(rt.broker_ok, part["latency"], rt.broker_error, broker.url)
    except Exception as exc:
        broker = BrokerHealth(False, None, str(exc), broker.url)
    queues: list[QueueInfo] = []
    unacked = UnackedInfo(0, None, rt.app.transport.visibility_timeout)
    by_queue: dict[str, list[float]] = {}
    if part is not None:
        unacked, by_queue = _unacked(rt, part, held)
        for q in rt.queues:
            ages = by_queue.get(q, [])
            steps = rt.app.transport.keys.steps
            queues.append(
                QueueInfo(
                    q,
                    tuple(zip(steps, part["lengths"][q], strict=True)),
                    len(ages),
                    max(ages) if ages else None,
                    q not in rt.paused,
                )
            )
    hostname = rt.hostname
    return Snapshot(
        taken_at=now,
        hostname=hostname,
        pool=rt.pool.name,
        concurrency=rt.pool.size(),
        prefetch_limit=c.prefetch_limit(),
        state=rt.state,
        queues=tuple(queues),
        unacked=unacked,
        timers=tuple(
            TimerEntry(r.id, r.name, r.eta or now, "retry" if r.headers.retries else "eta")
            for r in timers
        ),
        buckets=tuple(
            BucketInfo(n, label, cap, tokens, waiting) for n, label, cap, tokens, waiting in buckets
        ),
        children=tuple(
            ChildInfo(
                f.index,
                f.pid,
                f.state,
                running[f.job_id].id if f.job_id in running else None,
                f.label,
                f.job_runtime,
                f.started_at,
                f.cpu_percent,
                f.rss,
                f.tasks_done,
            )
            for f in rt.pool.figures()
        ),
        active=tuple(request_info(r, hostname) for r in active),
        reserved=tuple(request_info(r, hostname) for r in reserved),
        scheduled=tuple(request_info(r, hostname) for r in timers),
        recent=tuple(request_info(r, hostname) for r in reversed(recent)),
        revoked=revoked,
        dead_letters=tuple(part["dead"]) if part else (),
        dead_letter_count=int(part["dead_count"]) if part else 0,
        counters=rt.events.tally.counters(now),
        events=tuple(list(rt.events.ring)[-200:]),
        broker=broker,
        paused_queues=tuple(sorted(rt.paused)),
        recycled_children=rt.pool.recycled,
        beat=rt.beat_entries(),
        workers=rt.cluster.workers() if rt.cluster is not None else (),
    )
