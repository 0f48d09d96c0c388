"""Every task the tests send, at module level so pool children and subprocess workers find them.

The functions are plain module-level functions; ``register(app)`` turns them into tasks of a
given App under fixed names (``tests.add`` …), so each test can build a fresh App
(``tests/conftest.py``'s ``app`` fixture) while ``tq-console --worker -A tests.tasks:app`` loads
the module-level ``app`` below. Both find the same Redis database through ``redis_url()``:

* ``TQ_TEST_REDIS_URL`` names the server. With a database in its path it is used as it is (the
  ``worker_process`` fixture hands the full URL to its subprocess that way); without one, the
  database is chosen from the xdist worker id: ``gw0`` → 1, ``gw1`` → 2 … ``gw3`` → 4.
* Database 0 (a developer's own data) and 6-15 (used directly by other test files: the CLI,
  Flower and remote-control tests take 6, the runtime tests 7-9 and more, beat 10-15, the
  interop control and canvas tests 11-14) are never chosen; database 5 holds the execution
  ledgers (``ledger_url()``), whose keys are unique per test, so it is never flushed.

Ledger tasks write ``HINCRBY <key>:exec <task id> 1`` when they start and
``HINCRBY <key>:done <task id> 1`` when they finish, on the ledger database, so counts survive
anything that happens to the broker database.
"""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from tq import App, Task

#: The server used when ``TQ_TEST_REDIS_URL`` is not set.
DEFAULT_SERVER = "redis://127.0.0.1:6379"
#: Databases 1..4 are handed out per xdist worker.
FIRST_DB = 1
MAX_WORKERS = 4
#: The execution ledgers live here, apart from every broker/backend database.
LEDGER_DB = 5
#: Database 0 and the databases other test files use directly (CLI, runtime, beat, interop).
RESERVED_DBS = frozenset({0, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})


def worker_index() -> int:
    """The xdist worker number (``gw3`` → 3), 0 outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = name[2:]
    return int(digits) if digits.isdigit() else 0


def _db_of(url: str) -> int | None:
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else None


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def redis_url() -> str:
    """The broker and result URL of this test process (see the module docstring)."""
    base = os.environ.get("TQ_TEST_REDIS_URL") or DEFAULT_SERVER
    if _db_of(base) is not None:
        return base
    index = worker_index()
    if index >= MAX_WORKERS:
        raise RuntimeError(
            f"xdist worker gw{index}: at most {MAX_WORKERS} workers get a database of their own "
            f"({FIRST_DB}-{FIRST_DB + MAX_WORKERS - 1}); run with fewer workers"
        )
    return _with_db(base, FIRST_DB + index)


def ledger_url() -> str:
    """The URL of the ledger database on the same server."""
    return _with_db(redis_url(), LEDGER_DB)


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5)


# -- task bodies ------------------------------------------------------------------------------
def add(x: int, y: int) -> int:
    return x + y


def fail(message: str) -> None:
    raise ValueError(message)


def now() -> float:
    """The wall-clock time at which the task ran."""
    return time.time()


def append(url: str, key: str, value: Any) -> Any:
    """RPUSH ``value`` onto ``key`` (records the order in which tasks ran)."""
    client = _client(url)
    try:
        client.rpush(key, str(value))
    finally:
        client.close()
    return value


def ledger(self: Task, url: str, key: str, seconds: float = 0.0) -> str:
    """Count this execution in the ledger, sleep ``seconds``, count it as done."""
    task_id = str(self.request.id)
    client = _client(url)
    try:
        client.hincrby(f"{key}:exec", task_id, 1)
        time.sleep(seconds)
        client.hincrby(f"{key}:done", task_id, 1)
    finally:
        client.close()
    return task_id


def ledger_counts(url: str, key: str) -> tuple[dict[str, int], dict[str, int]]:
    """``(exec, done)`` counts by task id from the ledger ``key``."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        execs = {k: int(v) for k, v in client.hgetall(f"{key}:exec").items()}
        done = {k: int(v) for k, v in client.hgetall(f"{key}:done").items()}
    finally:
        client.close()
    return execs, done


#: name → (function, task options)
TASKS: dict[str, tuple[Any, dict[str, Any]]] = {
    "tests.add": (add, {}),
    "tests.fail": (fail, {}),
    "tests.now": (now, {}),
    "tests.append": (append, {}),
    "tests.ledger": (ledger, {"bind": True}),
}


def register(app: App) -> App:
    """Register every test task on ``app`` under its ``tests.*`` name; returns ``app``."""
    for name, (fun, options) in TASKS.items():
        app.task(name=name, **options)(fun)
    return app


def make_app(url: str | None = None, **settings: Any) -> App:
    """A tq App on the test database with the test tasks registered."""
    url = url or redis_url()
    settings.setdefault("broker_transport_options", {"idle_wait": 0.2})
    return register(App("tests", broker=url, backend=url, set_as_current=False, **settings))


#: The app ``tq-console --worker -A tests.tasks:app`` loads.
app = make_app()
