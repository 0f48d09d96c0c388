"""Task and its options: delay, apply_async, apply, retry, s, si, signature.

A task is a class with a ``run`` method; ``@app.task`` makes one from a function, as Celery
does. Options resolve in this order: ``apply_async`` arguments, ``task_annotations``, task
attributes, app settings.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from tq import faults, states
from tq.app import context
from tq.exceptions import Ignore, MaxRetriesExceededError, Reject, Retry

if TYPE_CHECKING:
    from tq.app.base import App
    from tq.app.canvas import Signature
    from tq.app.result import AsyncResult, EagerResult

logger = logging.getLogger(__name__)


class Task:
    """A task type. Subclass it (``base=``) to share behaviour between tasks."""

    name: str = ""
    app: App | None = None
    typing: ClassVar[bool] = True
    max_retries: int | None = 3
    default_retry_delay: float = 180
    rate_limit: str | None = None
    ignore_result: bool | None = None
    store_errors_even_if_ignored: bool | None = None
    serializer: str | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    acks_late: bool | None = None
    acks_on_failure_or_timeout: bool | None = None
    reject_on_worker_lost: bool | None = None
    track_started: bool | None = None
    autoretry_for: Sequence[type[BaseException]] = ()
    dont_autoretry_for: Sequence[type[BaseException]] = ()
    retry_kwargs: dict[str, Any] = {}
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    priority: int | None = None
    expires: float | dt.datetime | None = None
    queue: str | None = None
    shadow: str | None = None
    throws: tuple[type[BaseException], ...] = ()
    bind: bool = False
    #: Extra options given to ``@app.task`` that tq does not interpret itself.
    options: dict[str, Any] = {}

    # -- calling ------------------------------------------------------------------------------
    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"task {self.name} has no run() body")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task body in this process (no message, no result stored)."""
        request = context.current_request()
        if request is None or context.current_task() is not self:
            request = context.Request(args=list(args), kwargs=dict(kwargs), called_directly=True)
            token = context.push_task(self, request)
            try:
                return self.run(*args, **kwargs)
            finally:
                context.pop_task(token)
        return self.run(*args, **kwargs)

    @property
    def request(self) -> context.Request:
        """The request of the task running now in this context."""
        if context.current_task() is self:
            req = context.current_request()
            if req is not None:
                return req
        return context.Request(called_directly=True)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the task with these arguments; shortcut of ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send the task as a message.

        Args:
            args: positional arguments.
            kwargs: keyword arguments.
            **options: countdown, eta, expires, queue, routing_key, exchange, priority,
                task_id, headers, ignore_result, serializer, compression, link, link_error,
                time_limit, soft_time_limit, shadow, retries, argsrepr, kwargsrepr.
        """
        app = self._get_app()
        if app.conf.task_always_eager:
            task_id = options.pop("task_id", None)
            return self.apply(args, kwargs, task_id=task_id, **options)
        merged = self.resolve_options(options)
        return app.send_task(self.name, args, kwargs, task=self, **merged)

    def resolve_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Task-level defaults under the call's own options."""
        merged = dict(self._task_defaults())
        merged.update({k: v for k, v in options.items() if v is not None})
        return merged

    def _task_defaults(self) -> dict[str, Any]:
        """Annotations and task attributes as send options, cached until settings change."""
        app = self._get_app()
        cached = self.__dict__.get("_defaults_cache")
        if cached is not None and cached[0] == app.conf.version:
            return cached[1]  # type: ignore[no-any-return]
        merged: dict[str, Any] = {}
        annotations = app.annotations_for(self.name)
        for key in (
            "queue",
            "priority",
            "time_limit",
            "soft_time_limit",
            "serializer",
            "expires",
            "shadow",
        ):
            value = annotations.get(key, getattr(self, key, None))
            if value is not None:
                merged[key] = value
        ignore = annotations.get("ignore_result", self.ignore_result)
        if ignore is not None:
            merged["ignore_result"] = ignore
        merged.update(self.options)
        self.__dict__["_defaults_cache"] = (app.conf.version, merged)
        return merged

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        task_id: str | None = None,
        retries: int = 0,
        throw: bool | None = None,
        **options: Any,
    ) -> EagerResult:
        """Run the task here and now, with a request like a worker's (``is_eager``)."""
        from tq.app.result import EagerResult

        app = self._get_app()
        task_id = task_id or str(uuid.uuid4())
        request = context.Request(
            id=task_id,
            task=self.name,
            args=list(args or ()),
            kwargs=dict(kwargs or {}),
            retries=retries,
            is_eager=True,
            called_directly=False,
            root_id=task_id,
            callbacks=[dict(s) for s in _as_list(options.get("link"))] or None,
            errbacks=[dict(s) for s in _as_list(options.get("link_error"))] or None,
        )
        token = context.push_task(self, request)
        try:
            value = self.run(*request.args, **request.kwargs)
        except Retry as exc:
            context.pop_task(token)
            token = None
            return (
                self.apply(args, kwargs, task_id, retries + 1, throw, **options)
                if (exc.when is not None or exc.exc is not None)
                else EagerResult(task_id, exc, states.RETRY)
            )
        except (Ignore, Reject) as exc:
            return EagerResult(task_id, exc, states.IGNORED)
        except Exception as exc:
            propagate = app.conf.task_eager_propagates if throw is None else throw
            if propagate:
                raise
            import traceback

            return EagerResult(task_id, exc, states.FAILURE, traceback.format_exc())
        finally:
            if token is not None:
                context.pop_task(token)
        for sig in _as_list(options.get("link")):
            app.signature(sig).clone(args=(value,)).apply()
        return EagerResult(task_id, value, states.SUCCESS)

    # -- retrying -----------------------------------------------------------------------------
    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: dt.datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Send this task again (same id, ``retries + 1``) and raise ``Retry``.

        Raises:
            Retry: always when ``throw`` (the worker stores RETRY).
            MaxRetriesExceededError: when ``max_retries`` is used up and no ``exc`` was given
                (with ``exc``, that exception is raised instead).
        """
        request = self.request
        if request.called_directly:
            if exc is not None:
                raise exc
            raise Retry("task called directly; nothing to retry", exc, None)
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} kwargs:{request.kwargs}"
            )
        if eta is None and countdown is None:
            countdown = self.default_retry_delay
        if request.is_eager:
            raise Retry(exc=exc, when=eta if eta is not None else countdown)
        when: Any = eta if eta is not None else countdown
        if eta is None and countdown is not None:
            eta = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=float(countdown))
        self._get_app().send_retry(self, request, args, kwargs, eta, options)
        faults.hit("after_retry_publish")
        retry = Retry(exc=exc, when=when)
        if throw:
            raise retry
        return retry

    def backoff_countdown(self, retries: int) -> float:
        """Exponential backoff for ``autoretry_for`` (``retry_backoff``), capped and jittered."""
        factor = 1.0 if self.retry_backoff is True else float(self.retry_backoff)
        countdown = min(self.retry_backoff_max, factor * (2**retries))
        if self.retry_jitter:
            countdown = random.randrange(int(countdown) + 1)
        return float(countdown)

    # -- state and signatures ----------------------------------------------------------------
    def update_state(
        self, task_id: str | None = None, state: str | None = None, meta: Any = None, **kw: Any
    ) -> None:
        """Store a custom state (for example ``PROGRESS``) with ``meta`` as its result."""
        task_id = task_id or self.request.id
        if task_id is None:
            return
        backend = self._get_app().backend
        if backend is not None:
            backend.store_result(task_id, meta, state or states.SUCCESS)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        return self.signature(args, kwargs, immutable=True)

    def signature(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        from tq.app.canvas import Signature

        immutable = bool(options.pop("immutable", False))
        return Signature(
            self.name, args or (), kwargs or {}, options, immutable=immutable, app=self._get_app()
        )

    subtask = signature

    def map(self, it: Any) -> Any:
        from tq.app.canvas import xmap

        return xmap(self.s(), it, app=self._get_app())

    def starmap(self, it: Any) -> Any:
        from tq.app.canvas import xstarmap

        return xstarmap(self.s(), it, app=self._get_app())

    def chunks(self, it: Any, n: int) -> Any:
        from tq.app.canvas import chunks

        return chunks(self.s(), it, n, app=self._get_app())

    def AsyncResult(self, task_id: str) -> AsyncResult:
        from tq.app.result import AsyncResult

        return AsyncResult(task_id, app=self._get_app(), task_name=self.name)

    # -- hooks (override in a base class) -----------------------------------------------------
    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Called in the worker after the task succeeded."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Called in the worker after the task failed."""

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Called in the worker when the task is retried."""

    def after_return(
        self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Called in the worker after the task returned, whatever its state."""

    # -- helpers ------------------------------------------------------------------------------
    def _get_app(self) -> App:
        app = self.app or context.current_app()
        if app is None:
            raise RuntimeError(f"task {self.name} is not bound to an app")
        return app

    def option(self, name: str, default: Any = None) -> Any:
        """A task option resolved through annotations, the task, then the app setting."""
        app = self._get_app()
        annotations = app.annotations_for(self.name)
        if name in annotations:
            return annotations[name]
        value = getattr(self, name, None)
        if value is not None:
            return value
        setting = {
            "acks_late": "task_acks_late",
            "reject_on_worker_lost": "task_reject_on_worker_lost",
            "track_started": "task_track_started",
            "ignore_result": "task_ignore_result",
            "store_errors_even_if_ignored": "task_store_errors_even_if_ignored",
            "time_limit": "task_time_limit",
            "soft_time_limit": "task_soft_time_limit",
            "rate_limit": "task_default_rate_limit",
            "acks_on_failure_or_timeout": "task_acks_on_failure_or_timeout",
        }.get(name)
        return app.conf.get(setting) if setting else default

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple) and not (isinstance(value, dict) or hasattr(value, "task")):
        return list(value)
    return [value]


def make_task_class(
    fun: Callable[..., Any], base: type[Task], name: str, bind: bool, options: dict[str, Any]
) -> type[Task]:
    """A Task subclass whose ``run`` is ``fun`` (bound to the task when ``bind``)."""
    attrs: dict[str, Any] = {
        "name": name,
        "run": fun if bind else staticmethod(fun),
        "bind": bind,
        "__doc__": fun.__doc__,
        "__module__": fun.__module__,
        "__wrapped__": fun,
    }
    known = {k: v for k, v in options.items() if hasattr(Task, k) and k not in ("options",)}
    attrs.update(known)
    extra = {k: v for k, v in options.items() if not hasattr(Task, k)}
    if extra:
        attrs["options"] = extra
    return type(fun.__name__, (base,), attrs)
