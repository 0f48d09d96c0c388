"""Shared fixtures: the test Redis, fresh apps, runtimes and worker subprocesses, bounded waits,
and the hygiene checks every test runs under.

* ``redis_url``: the test database (see ``tests/tasks.py`` for how it is chosen: one of
  1-4, never 0, never 6-15), pinged once per session, flushed before and after each test.
  Without a server the test is skipped, or fails when ``CI=true``.
* ``app`` / ``make_app``: fresh ``tq.App`` objects on that database with ``tests/tasks.py``
  registered; closed at teardown.
* ``runtime``: a factory building and starting ``tq.worker.runtime.Runtime`` (solo by default,
  or the pool given by indirect parametrization); every runtime is stopped with a deadline.
* ``worker_process``: a factory starting ``tq-console --worker -A tests.tasks:app …`` as a
  subprocess and waiting until it answers ``ping``; killed at teardown.
* ``run_until`` / ``run_until_idle``: bounded condition waits (no sleeps that hope).
* ``ledger``: a per-test key on the ledger database (db 5) for counting executions.
* An autouse check fails any test that leaves non-daemon threads, ``tq-*`` threads or child
  processes behind.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from tq import App
from tq.worker.runtime import Runtime, RuntimeOptions

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # so "tests.tasks" imports the same way here and in subprocesses
    sys.path.insert(0, _ROOT)

from tests import tasks as test_tasks  # noqa: E402 - needs the path above
from tests._processes import (  # noqa: E402
    ROOT,
    terminate_group,
    wait_for_ping,
    worker_env,
)

#: Longest wait for a runtime to stop, or a worker subprocess to start or stop (seconds).
STOP_DEADLINE_S = 30.0
#: Grace given to threads and processes to finish before a test counts as leaking them.
LEAK_GRACE_S = 3.0
#: Poll interval of the condition waits.
POLL_S = 0.02

_REDIS_STATE: dict[str, Any] = {}


# -- waiting ----------------------------------------------------------------------------------
def wait_for(predicate: Callable[[], Any], timeout: float, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_S)


def is_idle(rt: Runtime) -> bool:
    """No message is waiting, held, scheduled or running for this runtime."""
    c = rt.controller
    if c is None:
        return True
    with c.lock:
        busy = bool(c.reserved or c.active or len(c.timer) or c._inbox)
    if busy:
        return False
    transport = rt.app.transport
    return all(transport.queue_length(q) == 0 for q in rt.queues) and transport.unacked_count() == 0


@pytest.fixture
def run_until() -> Callable[..., Any]:
    """``run_until(predicate, timeout, what=...)``: a bounded wait for a condition."""
    return wait_for


@pytest.fixture
def run_until_idle() -> Callable[..., None]:
    """``run_until_idle(runtime, timeout)``: wait until the runtime has nothing left to do."""

    def wait_idle(rt: Runtime, timeout: float = 30.0) -> None:
        wait_for(lambda: is_idle(rt), timeout, f"{rt.hostname} to become idle")

    return wait_idle


# -- Redis ------------------------------------------------------------------------------------
def _check_db(url: str) -> None:
    db = test_tasks._db_of(url)
    if db is None or db in test_tasks.RESERVED_DBS or db == test_tasks.LEDGER_DB:
        pytest.fail(
            f"refusing to run tests on {url}: the database must be one of 1-4 "
            "(0 is a developer's own, 5 holds ledgers, 6-15 are used by other test files)"
        )
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if os.environ.get("TQ_TEST_REDIS_URL") and test_tasks._db_of(
        os.environ["TQ_TEST_REDIS_URL"]
    ) is not None and workers > 1:
        pytest.fail(
            "TQ_TEST_REDIS_URL names a database but xdist runs several workers: leave the "
            "database out so each worker gets its own"
        )


def _ping(url: str) -> str | None:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
        return None
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_server() -> str:
    """Pings the test server once per session; skips (or fails with ``CI=true``) without one."""
    url = test_tasks.redis_url()
    _check_db(url)
    if "error" not in _REDIS_STATE:
        _REDIS_STATE["error"] = _ping(url)
    error = _REDIS_STATE["error"]
    if error is not None:
        message = f"Redis is not reachable at {url}: {error}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The test database URL; the database is flushed before and after the test."""
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    try:
        yield redis_server
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client on the test database (for key-by-key checks)."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def ledger(redis_server: str) -> Iterator[tuple[str, str]]:
    """``(ledger URL, key)``: a per-test ledger key on the ledger database, removed after."""
    url = test_tasks.ledger_url()
    key = f"ledger:{uuid.uuid4().hex}"
    yield url, key
    client = redis.Redis.from_url(url)
    try:
        client.delete(f"{key}:exec", f"{key}:done")
    finally:
        client.close()


# -- apps and runtimes ------------------------------------------------------------------------
@pytest.fixture
def make_app(redis_url: str) -> Iterator[Callable[..., App]]:
    """``make_app(**settings)``: a fresh App on the test database with the test tasks."""
    made: list[App] = []

    def make(**settings: Any) -> App:
        app = test_tasks.make_app(redis_url, **settings)
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()


@pytest.fixture
def app(make_app: Callable[..., App]) -> App:
    """A fresh App bound to the test database, with ``tests/tasks.py`` registered."""
    return make_app()


def _stop_with_deadline(rt: Runtime, deadline: float = STOP_DEADLINE_S) -> str | None:
    errors: list[BaseException] = []

    def stop() -> None:
        try:
            rt.stop(timeout=10.0)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=stop, name="test-runtime-stop", daemon=True)
    thread.start()
    thread.join(deadline)
    if thread.is_alive():
        rt.pool.kill()
        return f"runtime {rt.hostname} did not stop within {deadline} s"
    if errors:
        return f"runtime {rt.hostname} failed to stop: {errors[0]!r}"
    return None


@pytest.fixture
def runtime(app: App, request: pytest.FixtureRequest) -> Iterator[Callable[..., Runtime]]:
    """``runtime(pool=None, concurrency=1, app=None, **options)``: a started Runtime.

    The pool defaults to the fixture's indirect parameter (``solo`` without one). Every runtime
    built here is stopped at teardown, each within ``STOP_DEADLINE_S``.
    """
    built: list[Runtime] = []
    default_pool = getattr(request, "param", "solo")

    def make(
        pool: str | None = None,
        concurrency: int = 1,
        app: App | None = None,
        start: bool = True,
        **options: Any,
    ) -> Runtime:
        options.setdefault("hostname", f"rt{len(built)}-{uuid.uuid4().hex[:6]}@%h")
        rt = Runtime(
            app or default_app,
            RuntimeOptions(
                pool=pool or default_pool,
                concurrency=concurrency,
                install_signal_handlers=False,
                **options,
            ),
        )
        built.append(rt)
        if start:
            rt.start()
        return rt

    default_app = app
    yield make
    problems = [p for p in (_stop_with_deadline(rt) for rt in reversed(built)) if p]
    if problems:
        pytest.fail("; ".join(problems))


# -- worker subprocesses ----------------------------------------------------------------------
class WorkerProcess:
    """A worker subprocess and what a test needs to talk to it."""

    def __init__(self, proc: subprocess.Popen[bytes], nodename: str, log: Path) -> None:
        self.proc = proc
        self.nodename = nodename
        self.log = log

    def output(self) -> str:
        return self.log.read_text("utf-8", "replace")

    def terminate(self, deadline: float = 15.0) -> int | None:
        """Warm shutdown (SIGTERM to the worker only); returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(deadline)
        return self.proc.poll()


@pytest.fixture
def worker_process(
    app: App, redis_url: str, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """``worker_process(concurrency=1, queues="celery", pool="solo", name=None)``: a running
    ``tq-console --worker -A tests.tasks:app`` subprocess that has answered ``ping``."""
    started: list[subprocess.Popen[bytes]] = []
    exe = Path(sys.executable).parent / "tq-console"

    def start(concurrency: int = 1, queues: str = "celery", pool: str = "solo",
              name: str | None = None, extra_args: tuple[str, ...] = ()) -> WorkerProcess:
        name = name or f"w{uuid.uuid4().hex[:8]}"
        nodename = f"{name}@{socket.gethostname()}"
        log = tmp_path / f"{name}.log"
        cmd = [str(exe), "--worker", "-A", "tests.tasks:app", "-c", str(concurrency),
               "-Q", queues, "-n", nodename, "-P", pool, *extra_args]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=worker_env(redis_url), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        started.append(proc)
        wait_for_ping(app, nodename, proc, log)
        return WorkerProcess(proc, nodename, log)

    yield start
    for proc in started:
        terminate_group(proc)


# -- hygiene ----------------------------------------------------------------------------------
#: Environment variables that override every App's URLs (``tq.app.config.ENV_OVERRIDES``).
URL_OVERRIDES = ("TQ_BROKER_URL", "TQ_RESULT_BACKEND")


@pytest.fixture(autouse=True)
def no_url_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose their own URLs: ``TQ_BROKER_URL`` / ``TQ_RESULT_BACKEND`` would silently
    point every App at another server, whether exported by a developer or left in
    ``os.environ`` by an earlier in-process CLI call (``--broker`` sets them)."""
    for name in URL_OVERRIDES:
        monkeypatch.delenv(name, raising=False)


def _watched_threads() -> set[threading.Thread]:
    return {
        t for t in threading.enumerate()
        if t.is_alive() and (not t.daemon or t.name.startswith("tq-"))
        and t is not threading.main_thread()
    }


def _children() -> set[int]:
    """Direct children of this process (a worker subprocess's own pool is its business)."""
    out: set[int] = set()
    for child in psutil.Process().children(recursive=False):
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE:
                out.add(child.pid)
    return out


@pytest.fixture(autouse=True)
def no_leaked_threads_or_processes() -> Iterator[None]:
    """Fail a test that leaves non-daemon threads, tq threads, child processes or unclosed
    resources behind."""
    threads_before = _watched_threads()
    children_before = _children()
    yield
    # Collect now, so an unclosed socket or file of this test is reported against this test
    # (filterwarnings=error turns the ResourceWarning into an error) and not a later one.
    gc.collect()
    deadline = time.monotonic() + LEAK_GRACE_S
    while True:
        threads = _watched_threads() - threads_before
        children = _children() - children_before
        if not threads and not children:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    names = sorted(t.name for t in threads)
    procs = []
    for pid in sorted(children):
        with contextlib.suppress(psutil.Error):
            procs.append(f"{pid} {' '.join(psutil.Process(pid).cmdline())[:120]}")
            psutil.Process(pid).kill()
    pytest.fail(f"test left threads {names} and child processes {procs} behind")
