"""The current app and the current task request, carried by contextvars (no proxies)."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tq.app.base import App
    from tq.app.task import Task

_current_app: ContextVar[App | None] = ContextVar("tq_current_app", default=None)
_task_stack: ContextVar[tuple[tuple[Task, Request], ...]] = ContextVar("tq_task_stack", default=())


@dataclass(slots=True)
class Request:
    """What a running task knows about its own message (``self.request``)."""

    id: str | None = None
    task: str | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    is_eager: bool = False
    called_directly: bool = True
    eta: str | None = None
    expires: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    chord: dict[str, Any] | None = None
    callbacks: list[dict[str, Any]] | None = None
    errbacks: list[dict[str, Any]] | None = None
    chain: list[dict[str, Any]] | None = None
    timelimit: tuple[float | None, float | None] = (None, None)
    delivery_info: dict[str, Any] = field(default_factory=dict)
    hostname: str | None = None
    origin: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    ignore_result: bool = False
    headers: dict[str, Any] = field(default_factory=dict)
    shadow: str | None = None
    priority: int | None = None
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    #: Results of tasks this task sent (written as ``children`` in its result meta).
    children: list[Any] = field(default_factory=list)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default)


def current_app() -> App | None:
    return _current_app.get()


def set_current_app(app: App | None) -> None:
    _current_app.set(app)


def current_task() -> Task | None:
    stack = _task_stack.get()
    return stack[-1][0] if stack else None


def current_request() -> Request | None:
    stack = _task_stack.get()
    return stack[-1][1] if stack else None


def push_task(task: Task, request: Request) -> Any:
    return _task_stack.set((*_task_stack.get(), (task, request)))


def pop_task(token: Any) -> None:
    _task_stack.reset(token)
