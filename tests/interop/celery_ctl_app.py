"""A tiny Celery app that a real ``celery worker`` runs for tq's control-client interop tests.

Started as ``celery -A tests.interop.celery_ctl_app worker -P solo -c 1 -n celeryw@%h -E`` by
``tests/interop/test_control_client.py``. Broker and result backend default to Redis db 11
(``TQ_CTL_BROKER`` overrides). Imports Celery, never tq.
"""

from __future__ import annotations

import os
import time

from celery import Celery

BROKER = os.environ.get("TQ_CTL_BROKER", "redis://127.0.0.1:6379/11")

app = Celery("celery_ctl_app", broker=BROKER, backend=BROKER)
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    task_default_queue="celery",
)


@app.task(name="ctl.add")  # type: ignore[untyped-decorator]
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="ctl.sleep")  # type: ignore[untyped-decorator]
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="ctl.touch")  # type: ignore[untyped-decorator]
def touch(key: str) -> str:
    """Records that it ran by setting ``key`` in the broker db (so tests can tell)."""
    import redis

    redis.Redis.from_url(BROKER).set(key, "ran")
    return key
