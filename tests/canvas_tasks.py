"""The tasks of the canvas tests, on one tq App.

Broker and result backend are ``TQ_TEST_CANVAS_URL`` (default ``redis://127.0.0.1:6379/13``)
and the default queue ``TQ_TEST_CANVAS_QUEUE`` (default ``celery``), read at import, so a
worker started as ``tq-console --worker -A tests.canvas_tasks:app`` with those variables set
and the test process agree. The Celery twin of these tasks (same names) is
``tests/interop/celery_canvas_app.py``.

Errbacks record what they saw as JSON on the list ``ERRBACK_KEY`` in the same database.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis

from tq import App, Task

URL = os.environ.get("TQ_TEST_CANVAS_URL", "redis://127.0.0.1:6379/13")
#: List the errbacks RPUSH their records onto.
ERRBACK_KEY = "canvas:errbacks"

app = App("tests.canvas_tasks", broker=URL, backend=URL, set_as_current=False)
app.conf.result_extended = True  # results carry name, args, kwargs, worker, queue, retries
# Where this app sends (its continuations too): ``TQ_TEST_CANVAS_QUEUE``, default "celery".
app.conf.task_default_queue = os.environ.get("TQ_TEST_CANVAS_QUEUE", "celery")


def _record(entry: dict[str, Any]) -> None:
    client = redis.Redis.from_url(URL, socket_timeout=5)
    try:
        client.rpush(ERRBACK_KEY, json.dumps(entry))
    finally:
        client.close()


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def mul(x: int, y: int) -> int:
    return x * y


@app.task
def xsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task
def identity(value: Any) -> Any:
    return value


@app.task
def nap(value: Any, seconds: float) -> Any:
    """Sleeps ``seconds``, then returns ``value`` (spreads chord parts over several workers)."""
    time.sleep(seconds)
    return value


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task
def on_error(request: Any, exc: BaseException, traceback: str | None) -> None:
    """A new-style errback: called inside the worker that ran the failed task."""
    _record({"kind": "new", "id": request.id, "exc": repr(exc), "has_tb": bool(traceback)})


@app.task
def on_error_old(task_id: str) -> None:
    """An old-style errback: sent as a task with the failed task's id."""
    _record({"kind": "old", "id": task_id})


@app.task(bind=True)
def progress(self: Task, steps: int, pause_s: float = 0.05) -> int:
    """Reports ``PROGRESS`` with ``{"i": i}`` ``steps`` times, then returns ``steps``."""
    for i in range(steps):
        self.update_state(state="PROGRESS", meta={"i": i})
        time.sleep(pause_s)
    return steps


@app.task
def spawn(n: int) -> list[str]:
    """Sends ``add(i, i)`` for ``i < n`` from inside a task; returns their ids."""
    return [add.delay(i, i).id for i in range(n)]


@app.task(bind=True)
def xsum_counted(self: Task, numbers: list[int]) -> int:
    """``xsum`` that counts its own runs on ``canvas:runs:<task id>`` (exactly-once checks)."""
    client = redis.Redis.from_url(URL, socket_timeout=5)
    try:
        client.incr(f"canvas:runs:{self.request.id}")
    finally:
        client.close()
    return sum(numbers)
