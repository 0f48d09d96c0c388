"""The Celery 5.7 twin of ``tests/faults/fault_tasks.py`` for the mixed-fleet rows
(RELIABILITY.md T28, T32): the same task names and ledger writes, on a real Celery app, so a
Celery worker and a tq worker can consume the same queue and the ledger counts both.

Started as ``celery -A tests.faults.celery_fault_app worker …`` by ``test_mixed_fleet.py``.
Reads the same environment as ``fault_tasks``: ``TQ_FAULT_BROKER`` (broker and result
backend), ``TQ_FAULT_LEDGER``, ``TQ_FAULT_VT`` (visibility timeout; the restore sweep then
runs every second). Imports Celery and redis-py, never tq.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import task_success

LONG_S = 60.0

_clients: dict[tuple[int, str], redis.Redis] = {}


def _ledger() -> redis.Redis:
    url = os.environ["TQ_FAULT_LEDGER"]
    key = (os.getpid(), url)
    client = _clients.get(key)
    if client is None:
        _clients.clear()
        client = redis.Redis.from_url(url, socket_timeout=10)
        _clients[key] = client
    return client


def _started(task_id: str, redelivered: bool = False) -> int:
    pipe = _ledger().pipeline(transaction=False)
    pipe.hincrby("exec", task_id, 1)
    pipe.hset("pid", task_id, os.getpid())
    pipe.hset("started_at", task_id, repr(time.time()))
    pipe.hincrby("ran_on_celery", task_id, 1)
    if redelivered:
        pipe.hincrby("redelivered", task_id, 1)
    return int(pipe.execute()[0])


def _finished(task_id: str) -> None:
    _ledger().hincrby("done", task_id, 1)


def _redelivered(task: Any) -> bool:
    info = task.request.delivery_info or {}
    return bool(info.get("redelivered"))


def _work(task: Any, seconds: float, first_seconds: float | None) -> str:
    n = _started(task.request.id, _redelivered(task))
    pause = first_seconds if first_seconds is not None and n == 1 else seconds
    if pause:
        time.sleep(pause)
    _finished(task.request.id)
    return str(task.request.id)


def make_celery(url: str, vt: float | None) -> Celery:
    app = Celery("fault_tasks", broker=url, backend=url, set_as_current=False)
    # sweep every second; a SIGKILLed sweeper's unacked_mutex expires after 5 s (the tq
    # side of the mixed-fleet tests uses the same expiry)
    transport: dict[str, Any] = {
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": 5,
    }
    if vt is not None:
        transport["visibility_timeout"] = vt
    app.conf.update(
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport,
        result_backend_transport_options={},
        worker_hijack_root_logger=False,
        task_default_queue="celery",
    )

    @app.task(name="fault.work", bind=True, ignore_result=True, shared=False)
    def work(self: Any, seconds: float = 0.0, first_seconds: float | None = None) -> str:
        return _work(self, seconds, first_seconds)

    @app.task(name="fault.work_late", bind=True, ignore_result=True, acks_late=True, shared=False)
    def work_late(self: Any, seconds: float = 0.0, first_seconds: float | None = None) -> str:
        return _work(self, seconds, first_seconds)

    @app.task(
        name="fault.chord_part", bind=True, acks_late=True, reject_on_worker_lost=True, shared=False
    )
    def chord_part(self: Any, value: int, seconds: float = 0.0, die: bool = False) -> int:
        _started(self.request.id, _redelivered(self))
        if seconds:
            time.sleep(seconds)
        _finished(self.request.id)
        return value

    @app.task(name="fault.chord_body", bind=True, shared=False)
    def chord_body(self: Any, values: list[int]) -> int:
        _started(self.request.id)
        _finished(self.request.id)
        return sum(values)

    return app


@task_success.connect
def die_after_success(sender: Any = None, **_: Any) -> None:
    """Same receiver as ``fault_tasks.die_after_success``: Celery sends ``task_success`` after
    ``mark_as_done`` (result stored, chord part counted) and before the late ack."""
    request = getattr(sender, "request", None)
    if getattr(sender, "name", None) != "fault.chord_part" or request is None:
        return
    if (request.kwargs or {}).get("die") and _ledger().hget("exec", str(request.id)) == b"1":
        _ledger().hset("killed_after_success", str(request.id), f"celery:{os.getpid()}")
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(LONG_S)


app = make_celery(
    os.environ.get("TQ_FAULT_BROKER", "redis://127.0.0.1:1/0"),
    float(os.environ["TQ_FAULT_VT"]) if os.environ.get("TQ_FAULT_VT") else None,
)
