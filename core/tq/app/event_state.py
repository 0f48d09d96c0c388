"""ClusterState: a pure reducer from events to worker and task views.

Owns the monitor's picture of the cluster built only from events (as Flower's and ``celery
events``' state): per worker its liveness (a ``worker-online``/``worker-heartbeat`` received
within ``2 * freq`` seconds, none since ``worker-offline``), counters, load and software; per
task its state and the fields its events carried. Out-of-order events merge as Celery's do: an
event whose state logically comes before the current one (``task-received`` after
``task-succeeded``) only fills in the received fields. Memory is bounded: the least recently
updated tasks and workers are evicted past ``max_tasks`` / ``max_workers``.

No I/O: feed it events (``tq.app.events.EventReceiver`` callbacks) and read frozen views.
Thread-safe. Imports only the standard library, tq.states and tq.protocol.events; the console's
widgets may import its views.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from tq import states
from tq.protocol.events import heartbeat_expires

#: Default bound on tasks kept (Flower's and Celery's ``max_tasks_in_memory``).
MAX_TASKS = 10_000
#: Default bound on workers kept (Celery's ``max_workers_in_memory``).
MAX_WORKERS = 5_000
#: ``freq`` assumed for a worker that never sent one (Celery's default).
DEFAULT_FREQ = 60.0

#: Task event subject → state (Celery's ``TASK_EVENT_TO_STATE``).
TASK_EVENT_STATES: dict[str, str] = {
    "sent": states.PENDING,
    "received": states.RECEIVED,
    "started": states.STARTED,
    "failed": states.FAILURE,
    "retried": states.RETRY,
    "succeeded": states.SUCCESS,
    "revoked": states.REVOKED,
    "rejected": states.REJECTED,
}
#: Celery's state precedence: a lower index happened later.
_PRECEDENCE = [
    "SUCCESS",
    "FAILURE",
    None,
    "REVOKED",
    "STARTED",
    "RECEIVED",
    "REJECTED",
    "RETRY",
    "PENDING",
]
_RANK = {s: i for i, s in enumerate(_PRECEDENCE)}
#: Fields an out-of-order ``task-received`` may still set (Celery's merge rule).
_RECEIVED_KEEP = frozenset(
    {"name", "args", "kwargs", "parent_id", "root_id", "retries", "eta", "expires"}
)


def _rank(state: str) -> int:
    return _RANK.get(state, _RANK[None])


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One worker as events describe it."""

    hostname: str
    online: bool
    last_heartbeat: float | None  # local receive time of the last online/heartbeat
    freq: float
    pid: int | None = None
    active: int | None = None
    processed: int | None = None
    loadavg: tuple[float, ...] | None = None
    sw_ident: str | None = None
    sw_ver: str | None = None
    sw_sys: str | None = None
    clock: int = 0
    last_seen: float | None = None  # local receive time of any event from it


@dataclass(frozen=True, slots=True)
class TaskView:
    """One task as events describe it (``args``/``kwargs``/``result`` are repr strings)."""

    uuid: str
    state: str = states.PENDING
    name: str | None = None
    args: str | None = None
    kwargs: str | None = None
    worker: str | None = None  # hostname of the worker that sent its events
    client: str | None = None  # hostname that sent task-sent
    sent: float | None = None
    received: float | None = None
    started: float | None = None
    succeeded: float | None = None
    failed: float | None = None
    retried: float | None = None
    revoked: float | None = None
    rejected: float | None = None
    timestamp: float | None = None  # of the event that set the current state
    runtime: float | None = None
    result: str | None = None
    exception: str | None = None
    traceback: str | None = None
    retries: int | None = None
    eta: str | None = None
    expires: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    clock: int = 0

    @property
    def is_ready(self) -> bool:
        return self.state in states.READY_STATES


_TASK_FIELDS = frozenset(f.name for f in fields(TaskView)) - {"uuid"}
_FLOAT_FIELDS = frozenset({"runtime", "timestamp", *TASK_EVENT_STATES})


@dataclass(slots=True)
class _Worker:
    hostname: str
    freq: float = DEFAULT_FREQ
    last_heartbeat: float | None = None
    last_seen: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def view(self, now: float) -> WorkerView:
        alive = self.last_heartbeat is not None and now < heartbeat_expires(
            self.last_heartbeat, self.freq
        )
        info = self.info
        load = info.get("loadavg")
        return WorkerView(
            hostname=self.hostname,
            online=alive,
            last_heartbeat=self.last_heartbeat,
            freq=self.freq,
            pid=_int(info.get("pid")),
            active=_int(info.get("active")),
            processed=_int(info.get("processed")),
            loadavg=tuple(float(x) for x in load if _number(x) is not None)
            if isinstance(load, list | tuple)
            else None,
            sw_ident=_str(info.get("sw_ident")),
            sw_ver=_str(info.get("sw_ver")),
            sw_sys=_str(info.get("sw_sys")),
            clock=_int(info.get("clock")) or 0,
            last_seen=self.last_seen,
        )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


class ClusterState:
    """Folds events into worker and task views.

    Args:
        max_tasks: tasks kept; the least recently updated go first.
        max_workers: workers kept, likewise.
        now: the wall clock used for liveness (``time.time``); tests pass a fake.
    """

    def __init__(
        self,
        max_tasks: int = MAX_TASKS,
        max_workers: int = MAX_WORKERS,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.max_tasks = max_tasks
        self.max_workers = max_workers
        self._now = now
        self._lock = threading.Lock()
        self._workers: OrderedDict[str, _Worker] = OrderedDict()
        self._tasks: OrderedDict[str, TaskView] = OrderedDict()
        self.event_count = 0
        self.task_count = 0  # task-received events seen

    # -- reducing -----------------------------------------------------------------------------
    def event(self, ev: Mapping[str, Any]) -> None:
        """Apply one event (a dict as ``EventReceiver`` yields it); junk is ignored."""
        kind = ev.get("type")
        if not isinstance(kind, str):
            return
        group, _, subject = kind.partition("-")
        with self._lock:
            self.event_count += 1
            if group == "worker":
                self._worker_event(subject, ev)
            elif group == "task":
                self._task_event(subject, ev)

    def apply(self, events: Iterable[Mapping[str, Any]]) -> None:
        for ev in events:
            self.event(ev)

    __call__ = event

    def _received_at(self, ev: Mapping[str, Any]) -> float:
        got = _number(ev.get("local_received"))
        return got if got is not None else self._now()

    def _get_worker(self, hostname: str) -> _Worker:
        worker = self._workers.get(hostname)
        if worker is None:
            worker = self._workers[hostname] = _Worker(hostname)
            while len(self._workers) > self.max_workers:
                self._workers.popitem(last=False)
        else:
            self._workers.move_to_end(hostname)
        return worker

    def _worker_event(self, subject: str, ev: Mapping[str, Any]) -> None:
        hostname = ev.get("hostname")
        if not isinstance(hostname, str):
            return
        worker = self._get_worker(hostname)
        seen = self._received_at(ev)
        worker.last_seen = seen
        for key in (
            "pid",
            "active",
            "processed",
            "loadavg",
            "sw_ident",
            "sw_ver",
            "sw_sys",
            "clock",
        ):
            if key in ev:
                worker.info[key] = ev[key]
        freq = _number(ev.get("freq"))
        if freq is not None and freq > 0:
            worker.freq = freq
        if subject == "offline":
            worker.last_heartbeat = None
        elif subject in ("online", "heartbeat"):
            worker.last_heartbeat = max(worker.last_heartbeat or 0.0, seen)

    def _task_event(self, subject: str, ev: Mapping[str, Any]) -> None:
        task_id = ev.get("uuid")
        if not isinstance(task_id, str):
            return
        hostname = ev.get("hostname") if isinstance(ev.get("hostname"), str) else None
        task = self._tasks.get(task_id)
        if task is None:
            task = TaskView(uuid=task_id)
        else:
            self._tasks.move_to_end(task_id)
        changes: dict[str, Any] = {k: v for k, v in ev.items() if k in _TASK_FIELDS}
        changes.pop("state", None)
        changes.pop("worker", None)
        changes.pop("client", None)
        timestamp = _number(ev.get("timestamp"))
        state = TASK_EVENT_STATES.get(subject, subject.upper())
        if subject in TASK_EVENT_STATES:
            changes[subject] = timestamp
        if hostname is not None:
            if subject == "sent":
                changes["client"] = hostname
            else:
                changes["worker"] = hostname
                self._get_worker(hostname).last_seen = self._received_at(ev)
        if subject == "received":
            self.task_count += 1
        if (
            state != states.RETRY
            and task.state != states.RETRY
            and _rank(state) > _rank(task.state)
        ):
            # This event logically happened before the current state: merge, don't regress.
            keep = _RECEIVED_KEEP if state == states.RECEIVED else frozenset()
            changes = {
                k: v
                for k, v in changes.items()
                if k in keep or k in TASK_EVENT_STATES or k in ("worker", "client")
            }
        else:
            changes["state"] = state
            changes["timestamp"] = timestamp
        task = replace(task, **self._typed(changes))
        self._tasks[task_id] = task
        while len(self._tasks) > self.max_tasks:
            self._tasks.popitem(last=False)

    @staticmethod
    def _typed(changes: dict[str, Any]) -> dict[str, Any]:
        """Events are JSON from the network: coerce values to the view's field types."""
        out: dict[str, Any] = {}
        for key, value in changes.items():
            if key in ("retries", "clock"):
                is_int = isinstance(value, int) and not isinstance(value, bool)
                out[key] = value if is_int else (0 if key == "clock" else None)
            elif key in _FLOAT_FIELDS:
                out[key] = _number(value)
            elif value is None or isinstance(value, str):
                out[key] = value
            else:
                out[key] = repr(value)
        return out

    # -- reading ------------------------------------------------------------------------------
    def workers(self) -> list[WorkerView]:
        """Every known worker, sorted by hostname."""
        now = self._now()
        with self._lock:
            return [self._workers[h].view(now) for h in sorted(self._workers)]

    def worker(self, hostname: str) -> WorkerView | None:
        with self._lock:
            worker = self._workers.get(hostname)
            return worker.view(self._now()) if worker is not None else None

    def alive_workers(self) -> list[WorkerView]:
        return [w for w in self.workers() if w.online]

    def task(self, task_id: str) -> TaskView | None:
        with self._lock:
            return self._tasks.get(task_id)

    def tasks(
        self,
        limit: int | None = None,
        state: str | None = None,
        worker: str | None = None,
        name: str | None = None,
    ) -> list[TaskView]:
        """Tasks, most recently updated first, optionally filtered."""
        with self._lock:
            items = list(reversed(self._tasks.values()))
        out = [
            t
            for t in items
            if (state is None or t.state == state)
            and (worker is None or t.worker == worker)
            and (name is None or t.name == name)
        ]
        return out if limit is None else out[:limit]

    def counts(self) -> dict[str, int]:
        """Number of kept tasks per state."""
        with self._lock:
            return dict(Counter(t.state for t in self._tasks.values()))

    def clear(self) -> None:
        with self._lock:
            self._workers.clear()
            self._tasks.clear()
            self.event_count = 0
            self.task_count = 0
