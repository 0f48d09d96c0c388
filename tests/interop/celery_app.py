"""A Celery app with the same task names as ``tests/tasks.py``, for the interop tests.

Started as ``celery -A tests.interop.celery_app worker -P solo -c 1 --without-mingle
--without-gossip`` by ``tests/interop/test_celery_interop.py``, and used in-process as a Celery
client. Broker and result backend are ``TQ_TEST_REDIS_URL`` (the test process passes its own
database, so both sides agree). Imports Celery, never tq.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery


def make_celery(url: str) -> Celery:
    """A Celery app on ``url`` with the interop tasks registered."""
    celery = Celery("tq_interop", broker=url, backend=url, set_as_current=False)
    celery.conf.update(
        broker_connection_retry_on_startup=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        task_default_queue="celery",
    )

    @celery.task(name="tests.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    @celery.task(name="tests.fail", shared=False)
    def fail(message: str) -> None:
        raise ValueError(message)

    @celery.task(name="tests.now", shared=False)
    def now() -> float:
        return time.time()

    @celery.task(name="tests.append", shared=False)
    def append(url: str, key: str, value: Any) -> Any:
        client = redis.Redis.from_url(url)
        try:
            client.rpush(key, str(value))
        finally:
            client.close()
        return value

    return celery


app = make_celery(os.environ.get("TQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/1"))
