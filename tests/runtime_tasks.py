"""Tasks the worker-runtime tests send (issue 3), at module level so prefork children and
``tq-console --worker -A tests.runtime_tasks:app`` subprocesses can import them.

The broker and result backend come from ``TQ_TEST_RUNTIME_URL`` (default db 7). Every task
counts its executions in a ledger on a separate database (``TQ_TEST_RUNTIME_LEDGER_URL``,
default db 8), under the key namespace ``TQ_TEST_RUNTIME_LEDGER_NS``: ``HINCRBY <ns>:exec <id> 1``
when it starts and ``HINCRBY <ns>:done <id> 1`` when it finishes (RELIABILITY.md section 3).
The ledger is on its own connection so the broker's state never corrupts the count.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import redis

from tq import App
from tq.exceptions import Ignore, Reject, SoftTimeLimitExceeded

#: Broker and result backend of the runtime tests.
URL = os.environ.get("TQ_TEST_RUNTIME_URL", "redis://127.0.0.1:6379/7")
#: Where tasks count their executions.
LEDGER_URL = os.environ.get("TQ_TEST_RUNTIME_LEDGER_URL", "redis://127.0.0.1:6379/8")
#: Key namespace of the ledger (one per xdist worker, so two test processes may share a db).
LEDGER_NS = os.environ.get("TQ_TEST_RUNTIME_LEDGER_NS", "rt")
#: Longest a "long" task sleeps when nobody kills or releases it (keeps a broken test finite).
LONG_S = 30.0

app = App("runtime_tasks", broker=URL, backend=URL, set_as_current=False)

_ledger: dict[int, redis.Redis] = {}  # per process: a forked child must not share the socket


def ledger() -> redis.Redis:
    """The ledger client of this process."""
    pid = os.getpid()
    client = _ledger.get(pid)
    if client is None:
        client = redis.Redis.from_url(LEDGER_URL)
        _ledger.clear()
        _ledger[pid] = client
    return client


def key(kind: str) -> str:
    """A ledger key: ``exec``, ``done``, ``pid``, ``flag`` …"""
    return f"{LEDGER_NS}:{kind}"


def started(task_id: str | None) -> int:
    """Count one execution of ``task_id`` (and remember which process ran it)."""
    client = ledger()
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(key("exec"), str(task_id), 1)
    pipe.hset(key("pid"), str(task_id), os.getpid())
    pipe.hset(key("at"), str(task_id), repr(time.time()))
    pipe.rpush(key("order"), str(task_id))
    return int(pipe.execute()[0])


def note_retry(task_id: str | None, retries: int) -> None:
    """Remember ``request.retries`` and the time of this execution: ``"<retries> <time>"``."""
    ledger().rpush(key(f"retries:{task_id}"), f"{retries} {time.time()!r}")


def finished(task_id: str | None) -> None:
    ledger().hincrby(key("done"), str(task_id), 1)


def flag_is_set(name: str) -> bool:
    return bool(ledger().exists(key(f"flag:{name}")))


def wait_flag(name: str, timeout: float = LONG_S) -> bool:
    """Block until the test sets flag ``name`` (BLPOP, no polling)."""
    got = ledger().blpop([key(f"flag:{name}")], timeout=timeout)
    return got is not None


# -- plain work -----------------------------------------------------------------------------
@app.task(bind=True)
def noop(self: Any, value: Any = None) -> Any:
    started(self.request.id)
    finished(self.request.id)
    return value


@app.task(bind=True)
def sleeper(self: Any, seconds: float) -> float:
    started(self.request.id)
    time.sleep(seconds)
    finished(self.request.id)
    return seconds


@app.task(bind=True, acks_late=True)
def late_sleeper(self: Any, seconds: float) -> float:
    started(self.request.id)
    time.sleep(seconds)
    finished(self.request.id)
    return seconds


@app.task(bind=True)
def whoami(self: Any) -> int:
    started(self.request.id)
    finished(self.request.id)
    return os.getpid()


@app.task(bind=True)
def failing(self: Any, message: str = "boom") -> None:
    started(self.request.id)
    finished(self.request.id)
    raise ValueError(message)


# -- worker loss ----------------------------------------------------------------------------
@app.task(bind=True, acks_late=True, reject_on_worker_lost=True)
def lost_then_ok(self: Any) -> str:
    """Sleeps on its first execution (to be killed from outside); returns at once after."""
    n = started(self.request.id)
    if n == 1:
        time.sleep(LONG_S)
    ledger().hset(
        key("redelivered"),
        str(self.request.id),
        int(bool(self.request.delivery_info.get("redelivered"))),
    )
    finished(self.request.id)
    return "second time lucky" if n > 1 else "never killed"


@app.task(bind=True, acks_late=True, reject_on_worker_lost=True)
def poison(self: Any) -> None:
    """Kills its own child every time (RELIABILITY.md T04)."""
    started(self.request.id)
    os.kill(os.getpid(), signal.SIGKILL)


# -- time limits ----------------------------------------------------------------------------
@app.task(bind=True, soft_time_limit=0.5)
def soft_limited(self: Any) -> str:
    started(self.request.id)
    try:
        time.sleep(LONG_S)
    except SoftTimeLimitExceeded:
        finished(self.request.id)
        return "caught soft limit"
    return "slept through"


@app.task(bind=True, time_limit=0.5)
def hard_limited(self: Any) -> str:
    started(self.request.id)
    time.sleep(LONG_S)
    return "slept through"


# -- retries --------------------------------------------------------------------------------
@app.task(bind=True, max_retries=3)
def retry_countdown(self: Any, countdown: float = 0.3) -> None:
    started(self.request.id)
    note_retry(self.request.id, self.request.retries)
    finished(self.request.id)
    self.retry(countdown=countdown)


@app.task(
    bind=True,
    autoretry_for=(KeyError,),
    retry_backoff=0.2,
    retry_jitter=False,
    retry_kwargs={"max_retries": 2},
)
def autoretry(self: Any) -> None:
    started(self.request.id)
    note_retry(self.request.id, self.request.retries)
    finished(self.request.id)
    raise KeyError("always missing")


@app.task(bind=True, max_retries=5)
def retry_until_flag(self: Any) -> str:
    """Retries (countdown 1 s) until the test sets flag ``<id>``; then succeeds."""
    started(self.request.id)
    finished(self.request.id)
    if not flag_is_set(str(self.request.id)):
        self.retry(countdown=1.0, exc=RuntimeError("not yet"))
    return f"done after {self.request.retries} retries"


@app.task(bind=True, acks_late=True, max_retries=2)
def late_retry_now(self: Any) -> None:
    """Retries at once (countdown 0): the re-sent message, with the same task id, can reach
    the worker while this execution is still finishing."""
    started(self.request.id)
    note_retry(self.request.id, self.request.retries)
    finished(self.request.id)
    self.retry(countdown=0)


@app.task(bind=True, max_retries=1)
def retry_overtaken(self: Any, wait_s: float = 5.0) -> None:
    """First execution: re-sends itself at once, then holds its RETRY until the re-sent
    execution has stored its final FAILURE (or ``wait_s`` passes), widening the window that
    every retry has between publishing the new message and storing RETRY."""
    started(self.request.id)
    note_retry(self.request.id, self.request.retries)
    finished(self.request.id)
    if self.request.retries:
        raise ValueError("final failure of the re-sent execution")
    retry = self.retry(countdown=0, throw=False)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and self.AsyncResult(self.request.id).state != "FAILURE":
        time.sleep(0.02)
    raise retry


# -- acks, reject, ignore -------------------------------------------------------------------
@app.task(bind=True, acks_late=True)
def reject_requeue_once(self: Any) -> str:
    n = started(self.request.id)
    finished(self.request.id)
    if n == 1:
        raise Reject("not now", requeue=True)
    return "accepted on delivery 2"


@app.task(bind=True, acks_late=True)
def reject_dead(self: Any) -> None:
    started(self.request.id)
    finished(self.request.id)
    raise Reject("refusing this one", requeue=False)


@app.task(bind=True)
def ignored(self: Any) -> None:
    started(self.request.id)
    finished(self.request.id)
    raise Ignore()


@app.task(bind=True, acks_late=True)
def late_wait_flag(self: Any, name: str) -> str:
    started(self.request.id)
    wait_flag(name)
    finished(self.request.id)
    return name


@app.task(bind=True)
def wait_for_flag(self: Any, name: str) -> str:
    started(self.request.id)
    wait_flag(name)
    finished(self.request.id)
    return name


# -- results --------------------------------------------------------------------------------
@app.task(bind=True, track_started=True)
def tracked(self: Any, name: str) -> str:
    started(self.request.id)
    wait_flag(name)
    finished(self.request.id)
    return name


@app.task(bind=True, ignore_result=True)
def quiet(self: Any) -> str:
    started(self.request.id)
    finished(self.request.id)
    return "nobody stores this"


@app.task(bind=True, ignore_result=True, store_errors_even_if_ignored=True)
def quiet_failure(self: Any) -> None:
    started(self.request.id)
    finished(self.request.id)
    raise ValueError("stored even though ignored")


@app.task(bind=True)
def progress(self: Any, name: str) -> str:
    started(self.request.id)
    self.update_state(state="PROGRESS", meta={"step": 1, "of": 2})
    wait_flag(name)
    finished(self.request.id)
    return "complete"


# -- rate limits and memory -----------------------------------------------------------------
@app.task(bind=True, rate_limit="10/s")
def limited(self: Any) -> None:
    started(self.request.id)
    ledger().rpush(key("limited_at"), repr(time.time()))
    finished(self.request.id)


_leak: list[bytes] = []  # grows in a child on purpose (max_memory_per_child)


@app.task(bind=True)
def leaky(self: Any, mib: int) -> int:
    started(self.request.id)
    _leak.append(os.urandom(mib * 1024 * 1024))
    finished(self.request.id)
    return os.getpid()
