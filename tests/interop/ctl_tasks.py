"""The tq app that a ``tq-console --worker`` subprocess runs for the remote-control, events,
Flower and management-CLI tests (issue 5).

Started as ``tq-console --worker -A tests.interop.ctl_tasks:app -E -n tqw1@%h`` by
``tests/interop/test_remote_control.py``, ``tests/interop/test_flower.py`` and
``tests/integration/test_cli.py``. ``tests/interop/celery_cli_app.py`` is its Celery twin: the
same task names on the same Redis, so ``celery inspect/control/events`` and Flower (which load
the Celery app) talk to this worker, and a real ``celery worker`` runs the same tasks.

Broker and result backend: ``TQ_CTL_TEST_URL`` (default ``redis://127.0.0.1:6379/6``).
``stripe_secret_key`` is a fake secret the tests look for in ``inspect conf`` replies.
"""

from __future__ import annotations

import os
import time

import redis

from tq import App

URL = os.environ.get("TQ_CTL_TEST_URL", "redis://127.0.0.1:6379/6")
#: A fake secret: ``inspect conf`` must never show it.
FAKE_SECRET = "sk_live_tq_FAKE_do_not_leak_0123456789"
#: Longest ``rc.sleep`` sleeps, whatever it is asked (keeps a broken test finite).
MAX_SLEEP_S = 60.0

app = App(
    "ctl_tasks",
    broker=URL,
    backend=URL,
    set_as_current=False,
    broker_transport_options={"idle_wait": 0.2},
    worker_prefetch_multiplier=1,
    stripe_secret_key=FAKE_SECRET,
)


@app.task(name="rc.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="rc.sleep")
def sleep(seconds: float) -> float:
    """Sleep in small steps (so a SIGTERM to the child lands promptly)."""
    deadline = time.monotonic() + min(float(seconds), MAX_SLEEP_S)
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return seconds


@app.task(name="rc.fail")
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(name="rc.touch")
def touch(key: str) -> str:
    """Set ``key`` to ``ran`` in the broker database (so a test can tell the task ran)."""
    client = redis.Redis.from_url(os.environ.get("TQ_BROKER_URL") or URL, socket_timeout=5)
    try:
        client.set(key, "ran")
    finally:
        client.close()
    return key


@app.task(name="rc.limited", rate_limit="100/m")
def limited() -> str:
    return "ok"
