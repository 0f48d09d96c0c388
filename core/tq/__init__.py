"""tq: a distributed task queue that speaks Celery's wire protocol on Redis.

The public API only; everything else is reached through these names.
"""

from __future__ import annotations

from tq.app.base import App, shared_task
from tq.app.canvas import Signature, chain, chord, chunks, group, signature
from tq.app.result import AsyncResult, EagerResult, GroupResult, ResultSet
from tq.app.task import Task
from tq.beat.schedules import crontab, schedule
from tq.exceptions import (
    Ignore,
    MaxRetriesExceededError,
    Reject,
    Retry,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
    TqError,
    WorkerLostError,
)

__version__ = "0.1.0"

__all__ = [
    "App",
    "AsyncResult",
    "EagerResult",
    "GroupResult",
    "Ignore",
    "MaxRetriesExceededError",
    "Reject",
    "ResultSet",
    "Retry",
    "Signature",
    "SoftTimeLimitExceeded",
    "Task",
    "TaskRevokedError",
    "TimeLimitExceeded",
    "TqError",
    "WorkerLostError",
    "__version__",
    "chain",
    "chord",
    "chunks",
    "crontab",
    "group",
    "schedule",
    "shared_task",
    "signature",
]


def __dir__() -> list[str]:
    return sorted(__all__)
