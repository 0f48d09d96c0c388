"""The frozen values ``Runtime.snapshot()`` returns.

Everything here is plain data (frozen, slotted dataclasses of str, int, float, tuples) so a
snapshot can be handed to another thread, rendered, recorded and replayed. This module imports
nothing from the rest of tq so the console's widgets may import it freely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """One consumed queue."""

    name: str
    #: Ready messages per priority step: ((0, n0), (3, n3), (6, n6), (9, n9)).
    lengths: tuple[tuple[int, int], ...]
    #: Messages of this queue held in the unacked hash (by any worker).
    unacked: int
    #: Age in seconds of the oldest unacked message of this queue, or None.
    oldest_unacked_age: float | None
    #: Whether this worker is consuming from it now (False when paused / cancelled).
    consuming: bool

    @property
    def ready(self) -> int:
        return sum(n for _, n in self.lengths)


@dataclass(frozen=True, slots=True)
class UnackedEntry:
    """One delivery recorded in the unacked hash."""

    delivery_tag: str
    task_id: str | None
    task_name: str | None
    queue: str
    age: float
    #: Seconds until the visibility-timeout sweep would restore it (negative: overdue).
    restore_in: float
    #: Held by this worker (True) or by someone else (False).
    held_here: bool


@dataclass(frozen=True, slots=True)
class UnackedInfo:
    count: int
    oldest_age: float | None
    visibility_timeout: float
    entries: tuple[UnackedEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class TimerEntry:
    """An ETA / countdown / retry held in memory until it is due."""

    task_id: str
    task_name: str
    due: float  # Unix time
    kind: str  # "eta" | "countdown" | "retry"


@dataclass(frozen=True, slots=True)
class BucketInfo:
    """A per-task-type token bucket."""

    task_name: str
    rate: str  # as configured, e.g. "10/s"
    capacity: float
    tokens: float
    waiting: int


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One pool child process."""

    index: int
    pid: int
    state: str  # "idle" | "busy" | "starting" | "retiring" | "dead"
    task_id: str | None
    task_name: str | None
    task_runtime: float | None  # seconds the current task has run
    started_at: float  # Unix time the process started
    cpu_percent: float
    rss: int  # bytes
    tasks_done: int


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """A task known to this worker (active, reserved, scheduled) or finished recently."""

    task_id: str
    name: str
    state: str
    args_repr: str
    kwargs_repr: str
    queue: str
    received_at: float
    started_at: float | None = None
    finished_at: float | None = None
    runtime: float | None = None
    worker_pid: int | None = None
    retries: int = 0
    eta: float | None = None
    result_repr: str | None = None
    exception: str | None = None
    traceback: str | None = None
    worker: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of ``tq.dead``."""

    id: str
    reason: str
    queue: str
    time: float
    task_id: str | None
    task_name: str | None
    raw_size: int
    raw_preview: str


@dataclass(frozen=True, slots=True)
class Counters:
    received: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    revoked: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    #: Tasks finished per second over the last few seconds.
    rate: float = 0.0
    #: Recent per-second throughput samples, oldest first (for sparklines).
    history: tuple[float, ...] = ()
    failure_history: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One entry of the bounded event ring."""

    time: float
    type: str  # Celery event type, e.g. "task-succeeded"
    task_id: str | None
    task_name: str | None
    detail: str
    hostname: str = ""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A node of the cluster, from heartbeats."""

    hostname: str
    online: bool
    last_heartbeat: float
    active: int
    processed: int
    loadavg: tuple[float, ...]
    sw_ident: str
    sw_ver: str
    pool_size: int | None = None


@dataclass(frozen=True, slots=True)
class BeatEntryInfo:
    name: str
    task: str
    schedule: str
    next_run: float | None
    last_run: float | None
    total_run_count: int
    last_result: str | None = None


@dataclass(frozen=True, slots=True)
class BrokerHealth:
    ok: bool
    latency_ms: float | None
    error: str | None = None
    url: str = ""  # credentials masked


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the console shows, taken at ``taken_at``."""

    taken_at: float
    hostname: str
    pool: str
    concurrency: int
    prefetch_limit: int
    state: str  # "starting" | "running" | "stopping" | "stopped"
    queues: tuple[QueueInfo, ...] = ()
    unacked: UnackedInfo = field(default_factory=lambda: UnackedInfo(0, None, 3600.0))
    timers: tuple[TimerEntry, ...] = ()
    buckets: tuple[BucketInfo, ...] = ()
    children: tuple[ChildInfo, ...] = ()
    active: tuple[RequestInfo, ...] = ()
    reserved: tuple[RequestInfo, ...] = ()
    scheduled: tuple[RequestInfo, ...] = ()
    recent: tuple[RequestInfo, ...] = ()
    revoked: tuple[str, ...] = ()
    dead_letters: tuple[DeadLetter, ...] = ()
    dead_letter_count: int = 0
    counters: Counters = field(default_factory=Counters)
    events: tuple[EventRecord, ...] = ()
    workers: tuple[WorkerInfo, ...] = ()
    beat: tuple[BeatEntryInfo, ...] = ()
    broker: BrokerHealth = field(default_factory=lambda: BrokerHealth(True, None))
    paused_queues: tuple[str, ...] = ()
    recycled_children: int = 0


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a runtime command did, in words a UI can show."""

    ok: bool
    message: str
    count: int = 0
    data: Any = None
