"""Pools run jobs somewhere else: prefork children, threads, or the calling thread (solo).

A pool knows nothing of tasks, Redis or the app: it is given the import paths of an
initializer (run once per child, returning a context) and a target (``target(ctx, payload)``)
and moves opaque payloads and return values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class Job:
    """One unit of work for a pool."""

    id: str
    payload: Any
    label: str = ""  # shown in child figures (the runtime puts the task name here)
    soft_time_limit: float | None = None
    hard_time_limit: float | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """A job finished and its target returned ``value``."""

    job_id: str
    value: Any
    pid: int


@dataclass(frozen=True, slots=True)
class Lost:
    """A job's process ended before it reported. ``reason``: died, timeout or terminated."""

    job_id: str
    reason: str
    pid: int
    exitcode: int | None = None
    signum: int | None = None


Outcome = Done | Lost


@dataclass(frozen=True, slots=True)
class ChildFigures:
    index: int
    pid: int
    state: str
    job_id: str | None
    label: str | None
    job_runtime: float | None
    started_at: float
    cpu_percent: float
    rss: int
    tasks_done: int


@dataclass(slots=True)
class PoolOptions:
    concurrency: int
    initializer: str  # "module:function" -> ctx
    target: str  # "module:function" (ctx, payload) -> value
    initargs: tuple[Any, ...] = ()
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None  # KiB
    on_child_start: Callable[[int], None] | None = field(default=None)


class Pool(Protocol):
    """What the controller needs from a pool."""

    name: str

    def start(self) -> None: ...

    def size(self) -> int: ...

    def idle(self) -> int: ...

    def submit(self, job: Job) -> None: ...

    def waitables(self) -> list[Any]: ...

    def collect(self, ready: list[Any]) -> list[Outcome]: ...

    def check(self, now: float) -> list[Outcome]: ...

    def terminate_job(self, job_id: str, signum: int) -> bool: ...

    def grow(self, n: int = 1) -> int: ...

    def shrink(self, n: int = 1) -> int: ...

    def busy_jobs(self) -> list[str]: ...

    def figures(self) -> list[ChildFigures]: ...

    def stop(self, timeout: float = 10.0) -> None: ...

    def kill(self) -> None: ...

    @property
    def recycled(self) -> int: ...


def resolve(path: str) -> Callable[..., Any]:
    """Import ``module:function``."""
    import importlib

    module, _, attr = path.partition(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(module), attr)
    return fn


def create_pool(name: str, options: PoolOptions) -> Pool:
    """The pool called ``name``: prefork (default), solo or threads."""
    if name == "prefork":
        from tq.worker.pool.supervisor import Supervisor

        return Supervisor(options)
    if name == "solo":
        from tq.worker.pool.solo import SoloPool

        return SoloPool(options)
    if name == "threads":
        from tq.worker.pool.threads import ThreadPool

        return ThreadPool(options)
    from tq.exceptions import ConfigurationError

    raise ConfigurationError(f"unknown pool {name!r}: choose prefork, solo or threads")
