"""Tasks of the fault-injection suite (issue 9), at module level so prefork children and
``tq-console --worker -A tests.faults.fault_tasks:app`` subprocesses import the same code.

Where things live is read from the environment, so one module serves every test's private
servers:

* ``TQ_FAULT_BROKER``: the private broker (also the result backend).
* ``TQ_FAULT_LEDGER``: the private ledger server. Every counting task writes
  ``HINCRBY exec <id> 1`` when it starts and ``HINCRBY done <id> 1`` when it finishes there
  (RELIABILITY.md section 3), so broker faults never corrupt the count.
* ``TQ_FAULT_VT``: the visibility timeout in seconds (transport option).
* ``TQ_FAULT_SETTINGS``: a JSON object of further app settings (delivery limit, message size
  limit, control allow-list or key …); ``TQ_FAULT_TRANSPORT``: extra transport options (for
  example ``master_name`` for a ``sentinel://`` broker).

The test process builds its own producer App with ``make_app`` and the same arguments.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import redis

from tq import App, Task
from tq import signals as tq_signals

#: Seconds the consumer blocks on an empty queue at most (short: quick shutdowns).
IDLE_WAIT_S = 0.2
#: Longest any "long" task sleeps when nothing kills it (keeps a broken test finite).
LONG_S = 60.0

_clients: dict[tuple[int, str], redis.Redis] = {}  # per process: forked children reconnect


def _ledger() -> redis.Redis:
    url = os.environ["TQ_FAULT_LEDGER"]
    key = (os.getpid(), url)
    client = _clients.get(key)
    if client is None:
        _clients.clear()
        client = redis.Redis.from_url(url, socket_timeout=10)
        _clients[key] = client
    return client


def started(task_id: Any, redelivered: bool = False) -> int:
    """Count one execution; remember the pid running it (and whether it was redelivered)."""
    pipe = _ledger().pipeline(transaction=False)
    pipe.hincrby("exec", str(task_id), 1)
    pipe.hset("pid", str(task_id), os.getpid())
    pipe.hset("started_at", str(task_id), repr(time.time()))
    if redelivered:
        pipe.hincrby("redelivered", str(task_id), 1)
    return int(pipe.execute()[0])


def finished(task_id: Any) -> None:
    _ledger().hincrby("done", str(task_id), 1)


# -- task bodies ------------------------------------------------------------------------------
def _redelivered(task: Task) -> bool:
    info = task.request.delivery_info or {}
    return bool(info.get("redelivered") or (task.request.headers or {}).get("redelivered"))


def work(self: Task, seconds: float = 0.0, first_seconds: float | None = None) -> str:
    """Count, sleep ``seconds`` (``first_seconds`` on the first execution when given), count
    as done."""
    n = started(self.request.id, _redelivered(self))
    pause = first_seconds if first_seconds is not None and n == 1 else seconds
    if pause:
        time.sleep(pause)
    finished(self.request.id)
    return str(self.request.id)


def suicide(self: Task) -> None:
    """Count, then SIGKILL the process running it (a poison task, RELIABILITY.md T04)."""
    started(self.request.id)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(LONG_S)


def retry_once(self: Task, countdown: float = 0.5) -> str:
    """First run: retry once (same id, ``retries`` 1); second run: done. Every run is also
    counted per attempt in the ``attempts`` hash as ``<id>:<retries>``."""
    _ledger().hincrby("attempts", f"{self.request.id}:{self.request.retries}", 1)
    started(self.request.id)
    if self.request.retries == 0:
        self.retry(countdown=countdown, max_retries=3)
    finished(self.request.id)
    return "retried"


def stuck(self: Task) -> None:
    """Sleeps far past its hard time limit (set on the task)."""
    started(self.request.id)
    time.sleep(LONG_S)
    finished(self.request.id)


def echo(self: Task, *args: Any, **kwargs: Any) -> int:
    """Counts itself and returns how many arguments it got (for the malformed battery)."""
    started(self.request.id)
    finished(self.request.id)
    return len(args) + len(kwargs)


def secret(self: Task, *_secrets: Any, seconds: float = 0.0, **_more: Any) -> str:
    """Takes secrets as arguments and never prints them (S6): counts, sleeps, done."""
    started(self.request.id)
    if seconds:
        time.sleep(seconds)
    finished(self.request.id)
    return "ok"


def leak(self: Task, message: str) -> None:
    """Raises ``ValueError(message)`` from a few frames down (S7: what a FAILURE stores)."""
    started(self.request.id)

    def deeper(n: int) -> None:
        if n == 0:
            raise ValueError(message)
        deeper(n - 1)

    deeper(5)


def chord_part(self: Task, value: int, seconds: float = 0.0, die: bool = False) -> int:
    """A chord header task (RELIABILITY.md T28): count, sleep, return ``value``. With ``die``
    its first execution is SIGKILLed by ``die_after_success`` below, once its part is recorded
    in the chord and before the message is acknowledged."""
    started(self.request.id, _redelivered(self))
    if seconds:
        time.sleep(seconds)
    finished(self.request.id)
    return value


def chord_body(self: Task, values: list[int]) -> int:
    """A chord callback: counts itself (callback executions) and returns the sum."""
    started(self.request.id)
    finished(self.request.id)
    return sum(values)


def die_after_success(sender: Any = None, **_: Any) -> None:
    """``task_success`` receiver: SIGKILL the process running a ``chord_part(die=True)`` on its
    first execution. ``task_success`` comes after the chord part was recorded (and, on Celery,
    the result stored; a tq prefork child leaves a small result to the controller) and before
    the acknowledgement, which is the window T28 names. Celery's twin
    (``celery_fault_app``) connects the same receiver."""
    request = getattr(sender, "request", None)
    if getattr(sender, "name", None) != "fault.chord_part" or request is None:
        return
    if (request.kwargs or {}).get("die") and _ledger().hget("exec", str(request.id)) == b"1":
        _ledger().hset("killed_after_success", str(request.id), f"tq:{os.getpid()}")
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(LONG_S)


#: name → (function, task options)
TASKS: dict[str, tuple[Any, dict[str, Any]]] = {
    "fault.work": (work, {"ignore_result": True}),
    "fault.work_late": (work, {"acks_late": True, "ignore_result": True}),
    "fault.work_late_reject": (
        work,
        {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True},
    ),
    "fault.work_result": (work, {}),
    "fault.work_late_result": (work, {"acks_late": True}),
    "fault.suicide": (suicide, {"acks_late": True, "reject_on_worker_lost": True}),
    "fault.retry_once": (retry_once, {}),
    "fault.retry_once_late": (retry_once, {"acks_late": True}),
    "fault.stuck": (stuck, {"time_limit": 0.5}),
    "fault.echo": (echo, {}),
    "fault.secret": (secret, {}),
    "fault.leak": (leak, {}),
    "fault.chord_part": (chord_part, {"acks_late": True, "reject_on_worker_lost": True}),
    "fault.chord_body": (chord_body, {}),
}


def make_app(
    broker: str | None = None,
    vt: float | None = None,
    settings: dict[str, Any] | None = None,
    transport: dict[str, Any] | None = None,
) -> App:
    """The fault suite's App on ``broker`` (the backend is the same server)."""
    url = broker or os.environ.get("TQ_FAULT_BROKER") or "redis://127.0.0.1:1/0"
    options: dict[str, Any] = {"idle_wait": IDLE_WAIT_S}
    if vt is not None:
        options["visibility_timeout"] = vt
    options.update(transport or {})
    app = App(
        "fault_tasks",
        broker=url,
        backend=url,
        set_as_current=False,
        broker_transport_options=options,
        result_backend_transport_options=dict(transport or {}),
        **(settings or {}),
    )
    for name, (fun, task_options) in TASKS.items():
        app.task(name=name, bind=True, **task_options)(fun)
    return app


tq_signals.task_success.connect(die_after_success)


def _env_json(name: str) -> dict[str, Any]:
    raw = os.environ.get(name)
    return dict(json.loads(raw)) if raw else {}


#: The app ``tq-console --worker -A tests.faults.fault_tasks:app`` loads.
app = make_app(
    vt=float(os.environ["TQ_FAULT_VT"]) if os.environ.get("TQ_FAULT_VT") else None,
    settings=_env_json("TQ_FAULT_SETTINGS"),
    transport=_env_json("TQ_FAULT_TRANSPORT"),
)
