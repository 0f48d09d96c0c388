"""Real Celery 5 beside tq on the same Redis, both directions (wire spec section 11).

* A Celery client's tasks run on a tq worker; Celery's ``AsyncResult.get()`` reads tq's results.
* A tq client's tasks run on a real ``celery worker`` subprocess; tq's ``get()`` reads Celery's.
* A task raising ``ValueError`` is seen as ``ValueError`` by both clients.
* Countdown and priority sent by Celery are honoured by tq.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from tests._processes import ROOT, terminate_group, wait_for_ping, worker_env
from tests.interop.celery_app import make_celery

from tq import App
from tq.worker.runtime import Runtime

pytestmark = [pytest.mark.interop, pytest.mark.redis]

RESULT_TIMEOUT_S = 20.0


@pytest.fixture
def celery_client(redis_url: str) -> Iterator[Celery]:
    """An in-process Celery app on the test database (same broker and result db as tq)."""
    celery = make_celery(redis_url)
    yield celery
    celery.close()


@pytest.fixture
def celery_worker(app: App, redis_url: str, tmp_path: Path) -> Iterator[str]:
    """A real ``celery worker`` subprocess on the test database; yields its node name."""
    nodename = f"celery{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    log = tmp_path / "celery-worker.log"
    celery = Path(sys.executable).parent / "celery"
    cmd = [str(celery), "-A", "tests.interop.celery_app", "worker", "-P", "solo", "-c", "1",
           "--without-mingle", "--without-gossip", "-n", nodename, "-l", "INFO"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=worker_env(redis_url), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        wait_for_ping(app, nodename, proc, log)
        yield nodename
    finally:
        terminate_group(proc)


# -- Celery client → tq worker ----------------------------------------------------------------
def test_celery_client_task_runs_on_a_tq_worker(
    celery_client: Celery, runtime: Callable[..., Runtime]
) -> None:
    runtime()
    result = celery_client.send_task("tests.add", (2, 2))
    assert result.get(timeout=RESULT_TIMEOUT_S) == 4
    assert result.state == "SUCCESS"


def test_celery_client_sees_value_error_raised_on_a_tq_worker(
    celery_client: Celery, runtime: Callable[..., Runtime]
) -> None:
    runtime()
    result = celery_client.send_task("tests.fail", ("from tq",))
    with pytest.raises(ValueError, match="from tq"):
        result.get(timeout=RESULT_TIMEOUT_S)
    assert result.state == "FAILURE"


def test_celery_countdown_is_honoured_by_tq(
    celery_client: Celery, runtime: Callable[..., Runtime]
) -> None:
    runtime()
    sent_at = time.time()
    ran_at = celery_client.send_task("tests.now", countdown=2).get(timeout=RESULT_TIMEOUT_S)
    assert 2.0 - 1e-3 <= ran_at - sent_at < 2.0 + 5.0


def test_celery_priorities_are_honoured_by_tq(
    celery_client: Celery, runtime: Callable[..., Runtime], redis_url: str,
    redis_client: redis.Redis, run_until: Callable[..., Any],
) -> None:
    key = f"order:{uuid.uuid4().hex}"
    for priority in (9, 6, 3, 0, 5, 1):
        celery_client.send_task("tests.append", (redis_url, key, priority), priority=priority)
    runtime(concurrency=1)
    run_until(lambda: redis_client.llen(key) == 6, RESULT_TIMEOUT_S, "six tasks to run")
    assert [int(v) for v in redis_client.lrange(key, 0, -1)] == [0, 1, 3, 5, 6, 9]


# -- tq client → Celery worker ----------------------------------------------------------------
def test_tq_client_task_runs_on_a_celery_worker(app: App, celery_worker: str) -> None:
    result = app.tasks["tests.add"].delay(2, 2)
    assert result.get(timeout=RESULT_TIMEOUT_S) == 4
    assert result.state == "SUCCESS"


def test_tq_client_sees_value_error_raised_on_a_celery_worker(
    app: App, celery_worker: str
) -> None:
    result = app.tasks["tests.fail"].delay("from celery")
    with pytest.raises(ValueError, match="from celery") as info:
        result.get(timeout=RESULT_TIMEOUT_S)
    assert type(info.value) is ValueError
    assert result.state == "FAILURE"
    assert "ValueError: from celery" in (result.traceback or "")
