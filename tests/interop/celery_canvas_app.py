"""The Celery twin of ``tests/canvas_tasks.py``: the same task names and bodies on a real
Celery app, for the canvas interop tests.

Started as ``celery -A tests.interop.celery_canvas_app worker -P solo -c 1 -Q celery`` by
``tests/interop/test_canvas_interop.py``, and used in-process as the Celery client. Broker and
result backend: ``TQ_TEST_CANVAS_INTEROP_URL`` (default ``redis://127.0.0.1:6379/12``).
Imports Celery, never tq.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery

URL = os.environ.get("TQ_TEST_CANVAS_INTEROP_URL", "redis://127.0.0.1:6379/12")
#: Same list as ``tests.canvas_tasks.ERRBACK_KEY``.
ERRBACK_KEY = "canvas:errbacks"

app = Celery("tests.canvas_tasks", broker=URL, backend=URL)
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    task_default_queue="celery",
    result_extended=True,
)


def _client() -> redis.Redis:
    return redis.Redis.from_url(URL, socket_timeout=5)


def _record(entry: dict[str, Any]) -> None:
    client = _client()
    try:
        client.rpush(ERRBACK_KEY, json.dumps(entry))
    finally:
        client.close()


@app.task(name="tests.canvas_tasks.add", shared=False)
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="tests.canvas_tasks.mul", shared=False)
def mul(x: int, y: int) -> int:
    return x * y


@app.task(name="tests.canvas_tasks.xsum", shared=False)
def xsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task(name="tests.canvas_tasks.identity", shared=False)
def identity(value: Any) -> Any:
    return value


@app.task(name="tests.canvas_tasks.nap", shared=False)
def nap(value: Any, seconds: float) -> Any:
    time.sleep(seconds)
    return value


@app.task(name="tests.canvas_tasks.fail", shared=False)
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(name="tests.canvas_tasks.on_error", shared=False)
def on_error(request: Any, exc: BaseException, traceback: str | None) -> None:
    _record({"kind": "new", "id": request.id, "exc": repr(exc), "has_tb": bool(traceback)})


@app.task(name="tests.canvas_tasks.on_error_old", shared=False)
def on_error_old(task_id: str) -> None:
    _record({"kind": "old", "id": task_id})


@app.task(name="tests.canvas_tasks.xsum_counted", bind=True, shared=False)
def xsum_counted(self: Any, numbers: list[int]) -> int:
    client = _client()
    try:
        client.incr(f"canvas:runs:{self.request.id}")
    finally:
        client.close()
    return sum(numbers)
