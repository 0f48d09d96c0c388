"""Worker basics over every pool (solo, threads, prefork) against a real Redis: results,
errors, countdown, priority order, unknown tasks, warm shutdown without loss or duplicates, the
T20 malformed-message battery (RELIABILITY.md), and the headless ``tq-console --worker``.
"""

from __future__ import annotations

import json
import pickle
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from tests.tasks import ledger_counts

from tq import App
from tq.exceptions import NotRegistered
from tq.protocol.envelope import build_envelope, new_tag
from tq.transport.keys import DEAD, UNACKED, UNACKED_INDEX
from tq.transport.redis import split_dead
from tq.worker.runtime import Runtime

pytestmark = pytest.mark.redis

POOLS = ["solo", "threads", "prefork"]
#: Longest wait for one task result (seconds).
RESULT_TIMEOUT_S = 20.0

every_pool = pytest.mark.parametrize("runtime", POOLS, indirect=True)


def task(app: App, name: str) -> Any:
    return app.tasks[f"tests.{name}"]


@every_pool
def test_add_returns_its_sum(app: App, runtime: Callable[..., Runtime]) -> None:
    runtime()
    assert task(app, "add").delay(2, 2).get(timeout=RESULT_TIMEOUT_S) == 4


@every_pool
def test_value_error_propagates_with_its_type(app: App, runtime: Callable[..., Runtime]) -> None:
    runtime()
    result = task(app, "fail").delay("boom")
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=RESULT_TIMEOUT_S)
    assert result.state == "FAILURE"
    assert result.traceback and "ValueError: boom" in result.traceback


@every_pool
def test_countdown_runs_no_earlier_than_asked(app: App, runtime: Callable[..., Runtime]) -> None:
    runtime()
    sent_at = time.time()
    ran_at = task(app, "now").apply_async(countdown=2).get(timeout=RESULT_TIMEOUT_S)
    assert ran_at - sent_at >= 2.0 - 1e-3
    assert ran_at - sent_at < 2.0 + 5.0


@every_pool
def test_lower_priority_numbers_run_first(
    app: App, runtime: Callable[..., Runtime], redis_url: str, redis_client: redis.Redis,
    run_until: Callable[..., Any],
) -> None:
    # Sent while no worker runs; within a priority step (0-2, 3-5, 6-8, 9) order is FIFO.
    key = f"order:{uuid.uuid4().hex}"
    append = task(app, "append")
    for priority in (9, 6, 3, 0, 5, 1):
        append.apply_async((redis_url, key, priority), priority=priority)
    runtime(concurrency=1)
    run_until(lambda: redis_client.llen(key) == 6, RESULT_TIMEOUT_S, "six tasks to run")
    assert [int(v) for v in redis_client.lrange(key, 0, -1)] == [0, 1, 3, 5, 6, 9]


@every_pool
def test_unknown_task_stores_not_registered_and_is_dead_lettered(
    app: App, runtime: Callable[..., Runtime], redis_client: redis.Redis,
    run_until: Callable[..., Any],
) -> None:
    runtime()
    result = app.send_task("tests.does_not_exist", (1,))
    with pytest.raises(NotRegistered):
        result.get(timeout=RESULT_TIMEOUT_S)
    meta = json.loads(redis_client.get(f"celery-task-meta-{result.id}"))
    assert meta["status"] == "FAILURE"
    assert meta["result"] == {
        "exc_type": "NotRegistered",
        "exc_message": ["tests.does_not_exist"],
        "exc_module": "celery.exceptions",
    }
    run_until(lambda: redis_client.llen(DEAD) == 1, RESULT_TIMEOUT_S, "the dead letter")
    dead_meta, raw = split_dead(redis_client.lindex(DEAD, 0))
    assert dead_meta["task_id"] == result.id
    assert dead_meta["task_name"] == "tests.does_not_exist"
    assert dead_meta["queue"] == "celery"
    assert "unregistered" in dead_meta["reason"]
    assert json.loads(raw)["headers"]["id"] == result.id
    run_until(lambda: redis_client.hlen(UNACKED) == 0, RESULT_TIMEOUT_S, "the ack")


@every_pool
def test_warm_shutdown_gives_back_prefetched_work_and_nothing_runs_twice(
    app: App, runtime: Callable[..., Runtime], ledger: tuple[str, str],
    redis_client: redis.Redis, run_until: Callable[..., Any],
    run_until_idle: Callable[..., None],
) -> None:
    url, key = ledger
    ledger_task = task(app, "ledger")
    first = runtime(concurrency=2, prefetch_multiplier=10)
    ids = [ledger_task.delay(url, key, 0.5).id for _ in range(40)]

    def started() -> int:
        return len(ledger_counts(url, key)[0])

    run_until(lambda: started() >= 2, RESULT_TIMEOUT_S, "the first tasks to start")
    first.stop(timeout=30)
    execs, done = ledger_counts(url, key)
    assert execs == done, "a task that started before the warm shutdown did not finish"
    assert redis_client.hlen(UNACKED) == 0, "the stopped worker kept messages in unacked"
    assert redis_client.llen("celery") == 40 - len(done)

    second = runtime(concurrency=2)
    run_until(lambda: len(ledger_counts(url, key)[1]) == 40, 90, "the second worker to drain")
    run_until_idle(second, 10)
    execs, done = ledger_counts(url, key)
    assert sorted(execs) == sorted(ids)
    twice = [i for i, n in execs.items() if n > 1]
    assert not twice, f"ran more than once: {twice}"
    assert set(done.values()) == {1}
    assert redis_client.zcard(UNACKED_INDEX) == 0


# -- T20: the malformed-message battery -------------------------------------------------------
def _envelope(body: bytes, *, content_type: str = "application/json", name: str = "tests.add",
              headers: dict[str, Any] | None = None) -> str:
    task_id = str(uuid.uuid4())
    hdrs = {"lang": "py", "task": name, "id": task_id} if headers is None else headers
    props = {"delivery_tag": new_tag(), "delivery_info": {"exchange": "", "routing_key": "celery"},
             "priority": 0, "body_encoding": "base64"}
    return build_envelope(body, content_type, "utf-8", hdrs, props)


GOOD_BODY = json.dumps([[1, 2], {}, {}]).encode()


def _no_headers() -> str:
    data = json.loads(_envelope(GOOD_BODY))
    del data["headers"]
    return json.dumps(data)


def _bad_base64() -> str:
    data = json.loads(_envelope(GOOD_BODY))
    data["body"] = "this is %%% not base64!"
    return json.dumps(data)


POISON: dict[str, Callable[[], bytes | str]] = {
    "non-JSON envelope": lambda: b"this is not json {",
    "body not valid base64": _bad_base64,
    "base64 of invalid JSON": lambda: _envelope(b"[[1, 2], {}, {"),
    "unknown task": lambda: _envelope(GOOD_BODY, name="tests.no_such_task"),
    "pickle while only json is accepted": lambda: _envelope(
        pickle.dumps([[1, 2], {}, {}]), content_type="application/x-python-serialize"
    ),
    "unknown content type": lambda: _envelope(GOOD_BODY, content_type="application/x-made-up"),
    "JSON array envelope": lambda: json.dumps([{"body": "", "properties": {}}]),
    "no headers key": _no_headers,
    "body is not [args, kwargs, embed]": lambda: _envelope(b'{"a": 1}'),
}


@every_pool
def test_every_malformed_message_is_dead_lettered_and_the_worker_keeps_working(
    app: App, runtime: Callable[..., Runtime], redis_client: redis.Redis,
    run_until: Callable[..., Any],
) -> None:
    rt = runtime()
    add = task(app, "add")
    for n, (shape, make) in enumerate(POISON.items(), start=1):
        raw = make()
        raw_bytes = raw.encode() if isinstance(raw, str) else raw
        redis_client.lpush("celery", raw_bytes)
        assert add.delay(n, n).get(timeout=RESULT_TIMEOUT_S) == 2 * n, shape
        run_until(lambda n=n: redis_client.llen(DEAD) == n, RESULT_TIMEOUT_S,
                  f"the dead letter of {shape!r}")
        meta, original = split_dead(redis_client.lindex(DEAD, 0))
        assert original == raw_bytes, shape
        assert meta["reason"], shape
        assert meta["queue"] == "celery", shape
        assert meta["id"] and isinstance(meta["time"], float), shape
        assert rt.controller is not None and rt.state == "running", shape
    run_until(lambda: redis_client.hlen(UNACKED) == 0, RESULT_TIMEOUT_S, "every ack")
    assert redis_client.llen("celery") == 0


# -- the headless worker ----------------------------------------------------------------------
def test_headless_worker_subprocess_runs_tasks_and_exits_cleanly_on_sigterm(
    app: App, worker_process: Callable[..., Any],
) -> None:
    worker = worker_process(concurrency=2, pool="prefork")
    assert task(app, "add").delay(20, 22).get(timeout=RESULT_TIMEOUT_S) == 42
    assert worker.terminate() == 0, worker.output()[-2000:]


def test_solo_warm_shutdown_gives_back_prefetched_messages_without_running_them(
    app: App, runtime: Callable[..., Runtime], ledger: tuple[str, str],
    redis_client: redis.Redis, run_until: Callable[..., Any],
) -> None:
    url, key = ledger
    rt = runtime(pool="solo", prefetch_multiplier=10)
    for _ in range(10):
        task(app, "ledger").delay(url, key, 0.5)
    run_until(lambda: len(ledger_counts(url, key)[0]) >= 1, RESULT_TIMEOUT_S, "a task to start")
    rt.stop(timeout=30)
    assert len(ledger_counts(url, key)[1]) <= 2, "the prefetched messages ran during shutdown"
    assert redis_client.llen("celery") >= 8
