"""Malformed and hostile input (RELIABILITY.md T20, T21, S10, S11): the nine-shape battery on
the queue list, deep nesting and huge integers, the same junk on the pidbox and celeryev
channels, oversized messages and a compression bomb. The worker must stay up, log each item,
dead-letter every queue item with a reason, and run the next good task."""

from __future__ import annotations

import base64
import json
import pickle
import time
import uuid
import zlib
from typing import Any

import psutil
import pytest
from tests.faults.harness import Rig, is_answering, wait_until

from tq import App
from tq.exceptions import ProtocolError
from tq.protocol.control import pidbox_exchange
from tq.protocol.message import TaskSpec, build_task

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: 10k-deep nesting and a 5000-digit integer (Python refuses int() past 4300 digits).
DEEP = "[" * 10_000 + "]" * 10_000
HUGE_INT = "9" * 5000


def _valid(name: str = "fault.echo", args: tuple[Any, ...] = ()) -> dict[str, Any]:
    _tag, text = build_task(TaskSpec(name=name, id=str(uuid.uuid4()), args=args))
    envelope: dict[str, Any] = json.loads(text)
    return envelope


def _with_body(body: bytes, **changes: Any) -> bytes:
    env = _valid()
    env["body"] = base64.b64encode(body).decode()
    env.update(changes)
    return json.dumps(env).encode()


def _battery() -> dict[str, bytes]:
    """RELIABILITY.md's nine shapes, plus S10's deep nesting and huge integers."""
    no_headers = _valid()
    del no_headers["headers"]
    bad_b64 = _valid()
    bad_b64["body"] = "!!!not base64!!!"
    unknown = _valid("fault.no_such_task")
    deep_header = json.dumps(_valid())[:-1] + ', "x": ' + DEEP + "}"
    int_header = json.dumps(_valid()).replace('"retries": 0', f'"retries": {HUGE_INT}')
    return {
        "1 non-JSON envelope": b"this is {not json",
        "2 body not base64": json.dumps(bad_b64).encode(),
        "3 base64 body, invalid JSON": _with_body(b"{not json"),
        "4 unknown task name": json.dumps(unknown).encode(),
        "5 pickle while only JSON is accepted": _with_body(
            pickle.dumps(((), {}, {})),
            **{"content-type": "application/x-python-serialize", "content-encoding": "binary"},
        ),
        "6 unknown content type": _with_body(
            b"[[], {}, {}]", **{"content-type": "application/x-nope"}
        ),
        "7 JSON array envelope": b"[1, 2, 3]",
        "8 envelope without headers": json.dumps(no_headers).encode(),
        "9 body {'a': 1}": _with_body(b'{"a": 1}'),
        "S10 10k-deep nested args": _with_body(f"[[{DEEP}], {{}}, {{}}]".encode()),
        "S10 5000-digit integer in args": _with_body(f"[[{HUGE_INT}], {{}}, {{}}]".encode()),
        "S10 10k-deep nesting in the envelope": deep_header.encode(),
        "S10 5000-digit integer in a header": int_header.encode(),
    }


def _run_good_task(rig: Rig, app: App, timeout: float = 30) -> float:
    start = time.monotonic()
    res = app.send_task("fault.echo", args=(1, 2))
    wait_until(lambda: rig.ledger.done_of(res.id) == 1, timeout, "the good task to run")
    return time.monotonic() - start


def test_malformed_battery_on_the_queue_is_dead_lettered_and_the_worker_stays_up(
    rig: Rig, figures: dict[str, object]
) -> None:
    """T20 + S10 + S12 (case 4): every shape lands in tq.dead with a reason, one log line
    each; the worker stays up and the next good task runs."""
    app = rig.app()
    worker = rig.worker(concurrency=1)
    battery = _battery()
    key = app.transport.keys.queue("celery", 0)
    client = rig.broker.client()
    for raw in battery.values():
        client.lpush(key, raw)
    client.close()
    wait_until(
        lambda: len(rig.dead(app)) == len(battery), 30, f"{len(battery)} dead letters", interval=0.1
    )
    next_good_s = _run_good_task(rig, app)
    assert worker.is_alive()
    dead = rig.dead(app)
    reasons = [meta["reason"] for meta, _raw in reversed(dead)]
    assert all(reasons), reasons
    originals = {raw for _meta, raw in dead}
    assert originals == set(battery.values())
    output = worker.output()
    assert output.count("Dead-lettered") >= len(battery)
    assert (
        "Refusing to deserialize untrusted content of type application/x-python-serialize"
        in " ".join(reasons)
    )
    assert "Traceback" not in output
    assert rig.unacked(app) == 0
    assert rig.queue_length(app) == 0
    by_shape = {}
    for name, raw in battery.items():
        by_shape[name] = next(m["reason"] for m, r in dead if r == raw)[:90]
    figures.update(
        row="T20",
        worker_alive=True,
        dead_lettered=len(dead),
        next_good_task_s=round(next_good_s, 2),
        reasons=by_shape,
    )


def _pidbox_junk(app: App) -> list[bytes]:
    """Junk and hostile-but-well-formed remote-control requests."""

    def request(method: Any, arguments: Any) -> bytes:
        from tq.protocol.control import ControlRequest, build_request

        text = build_request(ControlRequest(method="ping", arguments={}))
        env = json.loads(text)
        body = {"method": method, "arguments": arguments, "destination": None}
        env["body"] = base64.b64encode(json.dumps(body).encode()).decode()
        return json.dumps(env).encode()

    return [
        *_battery().values(),
        b"",
        request(123, {}),
        request("pool_grow", {"n": "many"}),
        request("revoke", {"task_id": 5}),
        request("rate_limit", {"task_name": ["x"], "rate_limit": {}}),
        request("time_limit", {"task_name": "fault.echo", "soft": "x", "hard": [1]}),
        request("autoscale", {"max": "x"}),
        request("hello", {"from_node": 1, "revoked": 7}),
        request("query_task", {"ids": 3}),
        request("active", None),
        request("no_such_command", {}),
    ]


def test_junk_on_the_pidbox_channel_never_stops_the_worker(
    rig: Rig, figures: dict[str, object]
) -> None:
    """S11: the battery and hostile control requests published on ``celery.pidbox``: the
    worker keeps answering ping and running tasks (including the task type a bad
    ``time_limit`` request named)."""
    app = rig.app()
    worker = rig.worker(concurrency=1)
    client = rig.broker.client()
    channel = app.transport.keys.fanout_channel(pidbox_exchange(), "")
    junk = _pidbox_junk(app)
    for payload in junk:
        assert client.publish(channel, payload) >= 1
    client.close()
    wait_until(lambda: is_answering(app, worker.nodename), 20, "ping after the junk")
    next_good_s = _run_good_task(rig, app)
    time.sleep(1.0)  # a dead controller loop ends the process within 0.5 s
    _run_good_task(rig, app)
    assert is_answering(app, worker.nodename)
    assert worker.is_alive(), worker.output()[-3000:]
    output = worker.output()
    assert "Ignoring an unreadable remote-control message" in output
    assert "Controller loop died" not in output, output[-3000:]
    figures.update(
        row="S11-pidbox",
        payloads=len(junk),
        worker_alive=True,
        next_good_task_s=round(next_good_s, 2),
    )


def test_junk_on_the_celeryev_channel_never_stops_an_event_receiver(
    rig: Rig, figures: dict[str, object]
) -> None:
    """S11: the battery and odd-but-valid events on ``celeryev``: a worker sending events
    stays up, and the console's cluster watcher keeps receiving the worker's real events."""
    from tq.worker.cluster import ClusterWatcher

    app = rig.app()
    worker = rig.worker(concurrency=1, args=["-E"])
    watcher = ClusterWatcher(app)
    watcher.start()
    try:
        client = rig.broker.client()
        odd_events = [
            {"type": 5},
            {"type": "task-succeeded", "uuid": None},
            {"type": "worker-heartbeat", "hostname": ["x"], "timestamp": "abc", "freq": "often"},
            [{"type": "task-received", "uuid": "u", "clock": "x"}],
        ]
        payloads = [*_battery().values(), b""]
        for ev in odd_events:
            env = _valid()
            env["body"] = base64.b64encode(json.dumps(ev).encode()).decode()
            payloads.append(json.dumps(env).encode())
        for key in ("worker.heartbeat", "task.succeeded", "task.received"):
            channel = app.transport.keys.fanout_channel("celeryev", key)
            for payload in payloads:
                client.publish(channel, payload)
        client.close()
        res = app.send_task("fault.echo", args=(1,))
        wait_until(
            lambda: any(t.task_id == res.id and t.state == "SUCCESS" for t in watcher.tasks()),
            30,
            "the watcher to see the good task succeed",
        )
        assert worker.is_alive()
        assert any(w.hostname == worker.nodename for w in watcher.workers())
    finally:
        watcher.stop()
    figures.update(
        row="S11-celeryev", payloads=len(payloads) * 3, worker_alive=True, receiver_alive=True
    )


def test_message_over_the_size_limit_is_refused_at_publish_and_dead_lettered_at_consume(
    rig: Rig, figures: dict[str, object]
) -> None:
    """T21 (a): over ``broker_max_message_size`` a publish raises a clear error and sends
    nothing; an oversized envelope pushed by someone else is dead-lettered, not run."""
    limit = 1 << 20
    settings = {"broker_max_message_size": limit}
    app = rig.app(settings=settings)
    with pytest.raises(ProtocolError, match="broker_max_message_size"):
        app.send_task("fault.echo", args=("x" * (2 * limit),))
    assert rig.queue_length(app) == 0
    worker = rig.worker(concurrency=1, settings=settings)
    big = _with_body(json.dumps([["x" * (2 * limit)], {}, {}]).encode())
    rig.broker.client().lpush(app.transport.keys.queue("celery", 0), big)
    wait_until(lambda: rig.dead(app), 30, "the oversized message in tq.dead")
    ((meta, _raw),) = rig.dead(app)
    assert "limit" in meta["reason"]
    _run_good_task(rig, app)
    assert worker.is_alive()
    figures.update(row="T21a", refused_at_publish=True, dead_reason=meta["reason"])


def test_compression_bomb_is_dead_lettered_without_inflating(
    rig: Rig, figures: dict[str, object]
) -> None:
    """T21 (c): a zlib body (``compression`` header) that inflates to 256 MB, under a 1 MB
    limit: decompression stops at the limit, the message is dead-lettered, the child's RSS
    stays small and the worker keeps serving."""
    limit = 1 << 20
    settings = {"broker_max_message_size": limit}
    app = rig.app(settings=settings)
    worker = rig.worker(concurrency=1, settings=settings)
    comp = zlib.compressobj()
    chunk = b"0" * (1 << 20)
    bomb = b"".join(comp.compress(chunk) for _ in range(256)) + comp.flush()
    env = json.loads(_with_body(bomb).decode())
    env["headers"]["compression"] = "application/x-gzip"
    rig.broker.client().lpush(app.transport.keys.queue("celery", 0), json.dumps(env))
    wait_until(lambda: rig.dead(app), 30, "the bomb in tq.dead")
    ((meta, _raw),) = rig.dead(app)
    assert "larger than" in meta["reason"], meta
    _run_good_task(rig, app)
    rss = max((psutil.Process(pid).memory_info().rss for pid in worker.children()), default=0)
    assert 0 < rss < 200 << 20
    assert worker.is_alive()
    figures.update(
        row="T21c",
        compressed_bytes=len(bomb),
        inflates_to_bytes=256 << 20,
        dead_reason=meta["reason"],
        child_rss_mb=round(rss / 2**20, 1),
    )


def test_a_600_mb_message_is_refused_at_publish_under_the_default_limit(
    rig: Rig, figures: dict[str, object]
) -> None:
    """T21 (b): a 600 MB argument, above Redis's 512 MB ``proto-max-bulk-len``. Under the
    default ``broker_max_message_size`` (64 MiB) the publish raises a clear error before
    anything reaches the broker: the broker never sees a bulk it would refuse, and the
    queue stays empty."""
    app = rig.app()
    assert app.conf.broker_max_message_size == 64 * 1024 * 1024
    rss_before = psutil.Process().memory_info().rss
    started = time.monotonic()
    with pytest.raises(ProtocolError, match="over broker_max_message_size") as caught:
        app.send_task("fault.echo", args=("x" * (600 * 1024 * 1024),))
    refused_s = time.monotonic() - started
    assert "send a reference to the data instead" in str(caught.value)
    assert rig.queue_length(app) == 0
    info = rig.broker.client().info("stats")
    assert int(info.get("total_net_input_bytes", 0)) < 64 * 1024 * 1024
    figures.update(
        row="T21b",
        refused_s=round(refused_s, 2),
        producer_rss_growth_mb=round((psutil.Process().memory_info().rss - rss_before) / 2**20),
    )
