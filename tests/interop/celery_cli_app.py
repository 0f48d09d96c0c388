"""The Celery twin of ``tests/interop/ctl_tasks.py``: the same task names on the same Redis.

Loaded by the ``celery`` CLI (``celery -A tests.interop.celery_cli_app inspect|control|events|
flower``) to talk to a tq worker, and run as a real worker
(``celery -A tests.interop.celery_cli_app worker -P solo -c 1 -n cw1@%h``) for
``tq-console inspect/control``. Broker and result backend: ``TQ_CTL_TEST_URL`` (default
``redis://127.0.0.1:6379/6``). Imports Celery, never tq.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

URL = os.environ.get("TQ_CTL_TEST_URL", "redis://127.0.0.1:6379/6")
MAX_SLEEP_S = 60.0

app = Celery("celery_cli_app", broker=URL, backend=URL)
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    task_default_queue="celery",
)


@app.task(name="rc.add")  # type: ignore[untyped-decorator]
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="rc.sleep")  # type: ignore[untyped-decorator]
def sleep(seconds: float) -> float:
    deadline = time.monotonic() + min(float(seconds), MAX_SLEEP_S)
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return seconds


@app.task(name="rc.fail")  # type: ignore[untyped-decorator]
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(name="rc.touch")  # type: ignore[untyped-decorator]
def touch(key: str) -> str:
    client = redis.Redis.from_url(URL, socket_timeout=5)
    try:
        client.set(key, "ran")
    finally:
        client.close()
    return key


@app.task(name="rc.limited", rate_limit="100/m")  # type: ignore[untyped-decorator]
def limited() -> str:
    return "ok"
