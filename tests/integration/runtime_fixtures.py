"""Fixtures and waiting helpers of the worker-runtime tests (issue 3), kept apart from
``tests/conftest.py`` so the two suites stay independent.

Databases: the broker and results live in ``TQ_TEST_RUNTIME_URL`` (db 7 by default), the
execution ledger in ``TQ_TEST_RUNTIME_LEDGER_URL`` (db 8). Under xdist each worker process gets
a broker database of its own (7, 9, …: ``base + 2 * worker index``) because a test flushes it;
the ledger database is shared and namespaced per worker (``TQ_TEST_RUNTIME_LEDGER_NS``). The
environment is set here *before* ``tests.runtime_tasks`` is imported, so prefork children and
``tq-console --worker`` subprocesses see the same values.

Waiting is always bounded: ``wait_until`` polls a predicate against a deadline and fails with
a message naming what it waited for. No test sleeps hoping something happened.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psutil
import pytest
import redis


def _configure_environment() -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    base = os.environ.get("TQ_TEST_RUNTIME_URL", "redis://127.0.0.1:6379/7")
    if index:
        head, _, db = base.rpartition("/")
        number = int(db or 0) + 2 * index
        if number > 15:
            raise pytest.UsageError(
                f"runtime tests: xdist worker {worker} would need Redis db {number}; "
                "run with fewer workers (-n 2) or set TQ_TEST_RUNTIME_URL per worker"
            )
        base = f"{head}/{number}"
    os.environ["TQ_TEST_RUNTIME_URL"] = base
    os.environ.setdefault("TQ_TEST_RUNTIME_LEDGER_URL", "redis://127.0.0.1:6379/8")
    os.environ["TQ_TEST_RUNTIME_LEDGER_NS"] = f"rt-{worker or 'main'}"


_configure_environment()

from tests import runtime_tasks as tasks  # noqa: E402 - the environment must be set first

from tq import states  # noqa: E402
from tq.worker.runtime import Runtime, RuntimeOptions  # noqa: E402
from tq.worker.snapshot import Snapshot  # noqa: E402

T = TypeVar("T")

#: The consumer's longest blocking peek (1 s by default): shorter makes stop() quicker.
IDLE_WAIT_S = 0.25
#: Seconds a runtime gets to stop in teardown before the test fails for lingering.
STOP_TIMEOUT_S = 10.0


# -- waiting --------------------------------------------------------------------------------
def wait_until(
    predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.02
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def wait_state(task_id: str, wanted: str | set[str], timeout: float = 10.0) -> str:
    """Wait until the stored state of ``task_id`` is ``wanted`` (or one of them)."""
    allowed = {wanted} if isinstance(wanted, str) else wanted
    seen: list[str] = []

    def check() -> str | None:
        state = tasks.app.AsyncResult(task_id).state
        if not seen or seen[-1] != state:
            seen.append(state)
        return state if state in allowed else None

    try:
        return wait_until(check, timeout, f"task {task_id} to reach {sorted(allowed)}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; states seen: {seen}") from None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# -- the ledger -----------------------------------------------------------------------------
class Ledger:
    """Reads what tasks wrote to the execution ledger, and sets the flags they wait on."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def execs(self, task_id: str) -> int:
        return int(self.client.hget(tasks.key("exec"), task_id) or 0)

    def dones(self, task_id: str) -> int:
        return int(self.client.hget(tasks.key("done"), task_id) or 0)

    def all_execs(self) -> dict[str, int]:
        return {_text(k): int(v) for k, v in self.client.hgetall(tasks.key("exec")).items()}

    def all_dones(self) -> dict[str, int]:
        return {_text(k): int(v) for k, v in self.client.hgetall(tasks.key("done")).items()}

    def done_count(self) -> int:
        return int(self.client.hlen(tasks.key("done")))

    def pid(self, task_id: str) -> int | None:
        raw = self.client.hget(tasks.key("pid"), task_id)
        return int(raw) if raw else None

    def started_at(self, task_id: str) -> float | None:
        raw = self.client.hget(tasks.key("at"), task_id)
        return float(raw) if raw else None

    def values(self, name: str) -> list[str]:
        return [_text(v) for v in self.client.lrange(tasks.key(name), 0, -1)]

    def set_flag(self, name: str) -> None:
        """Release a task blocked in ``wait_flag(name)`` (or seen by ``flag_is_set``)."""
        self.client.rpush(tasks.key(f"flag:{name}"), 1)

    def wait_started(self, task_id: str, timeout: float = 10.0, times: int = 1) -> None:
        wait_until(
            lambda: self.execs(task_id) >= times,
            timeout,
            f"task {task_id} to start (execution {times})",
        )

    def flush(self) -> None:
        keys = list(self.client.scan_iter(match=f"{tasks.LEDGER_NS}:*", count=1000))
        if keys:
            self.client.delete(*keys)


# -- reading the broker ---------------------------------------------------------------------
def unacked_by_task(broker: redis.Redis) -> dict[str, str]:
    """``{task id: delivery tag}`` of everything in the unacked hash."""
    keys = tasks.app.transport.keys
    out: dict[str, str] = {}
    for tag, raw in broker.hgetall(keys.unacked).items():
        envelope, _exchange, _routing_key = json.loads(raw)
        out[str(envelope["headers"]["id"])] = _text(tag)
    return out


def queue_length(queue: str = "celery") -> int:
    return tasks.app.transport.queue_length(queue)


def dead_letters() -> list[dict[str, Any]]:
    return [meta for meta, _raw in tasks.app.transport.dead_letters(0, -1)]


def child_of(runtime: Runtime, task_id: str) -> int:
    """The pid of the pool child running ``task_id`` (from the runtime's snapshot)."""

    def find() -> int | None:
        for child in runtime.snapshot().children:
            if child.task_id == task_id:
                return child.pid
        return None

    return wait_until(find, 10.0, f"a child running {task_id} in the snapshot")


def child_pids(snapshot: Snapshot) -> set[int]:
    return {c.pid for c in snapshot.children}


def result_meta(task_id: str) -> dict[str, Any]:
    backend = tasks.app.backend
    assert backend is not None
    return backend.get_meta(task_id)


# -- fixtures -------------------------------------------------------------------------------
def _client(url: str) -> redis.Redis:
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError:
        client.close()
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is not running at {url}")
        pytest.skip(f"Redis is not running at {url}")
    return client


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    """The broker/results database, flushed before and after the test."""
    if tasks.app.conf.broker_url != tasks.URL:
        pytest.fail(f"TQ_BROKER_URL overrides the runtime tests' broker ({tasks.URL})")
    client = _client(tasks.URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    """The execution ledger of this test, emptied before and after."""
    client = _client(tasks.LEDGER_URL)
    book = Ledger(client)
    book.flush()
    yield book
    book.flush()
    client.close()


@pytest.fixture
def app_conf(broker: redis.Redis) -> Iterator[Any]:
    """``tasks.app.conf`` for this test; every change is undone afterwards and the app's
    connections are reset (transport options are read when the transport is built)."""
    conf = tasks.app.conf
    saved = conf.changes()
    tasks.app.close()
    yield conf
    for name in set(conf.changes()) - set(saved):
        del conf[name]
    conf.update(saved)
    tasks.app.close()


def _lingering_children() -> list[psutil.Process]:
    """Pool children still alive (forked copies of this Python process; servers other suites
    started in this xdist worker, such as the fault suite's redis-server, are not ours)."""
    me = psutil.Process()
    out = []
    for p in me.children(recursive=True):
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and p.exe() == me.exe():
                out.append(p)
        except psutil.Error:
            continue
    return out


def _worker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("tq-")]


@pytest.fixture
def make_runtime(app_conf: Any, ledger: Ledger) -> Iterator[Callable[..., Runtime]]:
    """Factory: ``make_runtime(pool="prefork", concurrency=2, **options)`` builds and starts a
    Runtime (signal handlers off); every runtime is stopped in teardown, and the test fails
    if worker threads or pool children outlive it."""
    made: list[Runtime] = []

    def factory(**options: Any) -> Runtime:
        options.setdefault("pool", "prefork")
        options.setdefault("concurrency", 2)
        options.setdefault("install_signal_handlers", False)
        transport_options = dict(tasks.app.conf.broker_transport_options or {})
        transport_options.setdefault("idle_wait", IDLE_WAIT_S)
        tasks.app.conf.broker_transport_options = transport_options
        if made and "hostname" not in options:
            options["hostname"] = f"rt{len(made)}@%h"
        runtime = Runtime(tasks.app, RuntimeOptions(**options))
        made.append(runtime)
        runtime.start()
        return runtime

    yield factory
    for runtime in reversed(made):
        runtime.stop(STOP_TIMEOUT_S)
    wait_until(
        lambda: not _worker_threads(),
        5.0,
        f"runtime threads to end (left: {_worker_threads()})",
        interval=0.05,
    )
    wait_until(
        lambda: not _lingering_children(),
        5.0,
        f"pool children to end (left: {_lingering_children()})",
        interval=0.05,
    )


def started_runtime_is_ready(runtime: Runtime) -> None:
    """Block until the runtime answers a remote-control ping (its pidbox is subscribed)."""
    wait_until(
        lambda: tasks.app.control.ping(destination=[runtime.hostname], timeout=0.3),
        10.0,
        f"{runtime.hostname} to answer ping",
    )


def is_ready_state(state: str) -> bool:
    return state in states.READY_STATES
