"""AsyncResult, EagerResult, ResultSet and GroupResult: blocking reads of task state.

``get()`` re-raises the task's exception with its own type when it is a builtin or an
already-loaded class, and as ``RemoteError`` otherwise; it never imports a module named in a
stored result (see ``tq.backend.meta``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from tq import states
from tq.backend import meta as m
from tq.exceptions import TimeoutError

if TYPE_CHECKING:
    from tq.app.base import App
    from tq.backend.redis import RedisBackend


class AsyncResult:
    """The state and result of one task, read from the result backend.

    Args:
        id: the task id.
        app: the app whose backend to read.
        task_name: the task's name, if known.
        parent: the result of the task before this one in a chain.
    """

    def __init__(
        self,
        id: str,
        app: App | None = None,
        task_name: str | None = None,
        parent: AsyncResult | None = None,
    ) -> None:
        from tq.app.context import current_app

        self.id = id
        self.app = app or current_app()
        self.task_name = task_name
        self.parent = parent
        self._cache: dict[str, Any] | None = None

    @property
    def task_id(self) -> str:
        return self.id

    @property
    def backend(self) -> RedisBackend:
        if self.app is None or self.app.backend is None:
            from tq.exceptions import ConfigurationError

            raise ConfigurationError(
                "no result backend is configured: pass backend='redis://...' to App "
                "or set result_backend"
            )
        return self.app.backend

    def _meta(self) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        meta = self.backend.get_meta(self.id)
        if meta.get("status") in states.READY_STATES:
            self._cache = meta
        return meta

    # -- state --------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return str(self._meta().get("status", states.PENDING))

    status = state

    @property
    def result(self) -> Any:
        return m.result_value(self._meta())

    info = result

    @property
    def traceback(self) -> str | None:
        return self._meta().get("traceback")

    @property
    def date_done(self) -> str | None:
        return self._meta().get("date_done")

    @property
    def children(self) -> list[AsyncResult] | None:
        raw = self._meta().get("children")
        if raw is None:
            return None
        return [result_from_tuple(c, self.app) for c in raw]

    @property
    def name(self) -> str | None:
        return self._meta().get("name") or self.task_name

    @property
    def args(self) -> Any:
        return self._meta().get("args")

    @property
    def kwargs(self) -> Any:
        return self._meta().get("kwargs")

    @property
    def worker(self) -> Any:
        return self._meta().get("worker")

    @property
    def queue(self) -> Any:
        return self._meta().get("queue")

    @property
    def retries(self) -> Any:
        return self._meta().get("retries")

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    # -- waiting ------------------------------------------------------------------------------
    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        disable_sync_subtasks: bool = True,
        follow_parents: bool = True,
    ) -> Any:
        """Wait for the task and return its result.

        Raises:
            TimeoutError: not ready within ``timeout`` seconds.
            Exception: the task's own exception when it failed and ``propagate`` is true.
        """
        if follow_parents and propagate and self.parent is not None:
            self.parent._raise_if_failed()
        meta = (
            self._cache
            if self._cache
            else self.backend.wait_for(self.id, timeout=timeout, on_message=on_message)
        )
        self._cache = meta
        value = m.result_value(meta)
        if propagate and meta.get("status") in states.PROPAGATE_STATES:
            assert isinstance(value, BaseException)
            raise value
        return value

    wait = get

    def _raise_if_failed(self) -> None:
        if self.parent is not None:
            self.parent._raise_if_failed()
        meta = self._meta()
        if meta.get("status") in states.PROPAGATE_STATES:
            exc = m.result_value(meta)
            assert isinstance(exc, BaseException)
            raise exc

    def collect(self, intermediate: bool = False, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
        """Wait for this result and every result it sent (``children``, groups included),
        breadth-first as Celery does: ``(result, value)`` pairs."""
        pending: deque[Any] = deque([self])
        while pending:
            node = pending.popleft()
            value = node.get(**kwargs)
            yield node, value
            pending.extend(node.children or [])

    def forget(self) -> None:
        self._cache = None
        self.backend.forget(self.id)

    def revoke(
        self,
        terminate: bool = False,
        signal: str = "SIGTERM",
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        if self.app is None:
            raise RuntimeError("revoke needs an app")
        self.app.control.revoke(self.id, terminate=terminate, signal=signal)

    def then(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - Celery promise API
        raise NotImplementedError("tq results are blocking; use get() instead of promises")

    def as_tuple(self) -> list[Any]:
        parent = self.parent.as_tuple() if self.parent is not None else None
        return [[self.id, parent], None]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __str__(self) -> str:
        return self.id


class EagerResult(AsyncResult):
    """The result of ``Task.apply()``: already known, never read from a backend."""

    def __init__(self, id: str, value: Any, state: str, traceback: str | None = None) -> None:
        super().__init__(id)
        self._value = value
        self._state = state
        self._traceback = traceback

    def _meta(self) -> dict[str, Any]:
        return {"status": self._state, "result": self._value, "traceback": self._traceback}

    @property
    def result(self) -> Any:
        return self._value

    info = result

    def get(self, timeout: float | None = None, propagate: bool = True, **kwargs: Any) -> Any:
        if (
            propagate
            and self._state in states.PROPAGATE_STATES
            and isinstance(self._value, BaseException)
        ):
            raise self._value
        return self._value

    wait = get

    def forget(self) -> None:
        pass


class ResultSet:
    """A list of results read together."""

    def __init__(self, results: Sequence[AsyncResult], app: App | None = None) -> None:
        self.results = list(results)
        self.app = app or (self.results[0].app if self.results else None)

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[AsyncResult]:
        return iter(self.results)

    def __getitem__(self, index: int) -> AsyncResult:
        return self.results[index]

    def add(self, result: AsyncResult) -> None:
        if result not in self.results:
            self.results.append(result)

    def _metas(self) -> list[dict[str, Any]]:
        leaves = [r for r in self.results if not isinstance(r, ResultSet)]
        if not leaves or self.app is None or self.app.backend is None:
            return [r._meta() for r in leaves]
        return self.app.backend.get_many([r.id for r in leaves])

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        return any(r.failed() for r in self.results)

    def waiting(self) -> bool:
        return not self.ready()

    def completed_count(self) -> int:
        return sum(1 for r in self.results if r.successful())

    def _raise_if_failed(self) -> None:
        """Raise the first failed member's exception (a chord body's ``get()`` checks its
        header this way); members are read with one MGET."""
        parent = getattr(self, "parent", None)
        if parent is not None:
            parent._raise_if_failed()
        for r in self.results:
            if isinstance(r, ResultSet):
                r._raise_if_failed()
        for meta in self._metas():
            if meta.get("status") in states.PROPAGATE_STATES:
                exc = m.result_value(meta)
                assert isinstance(exc, BaseException)
                raise exc

    def forget(self) -> None:
        for r in self.results:
            r.forget()

    def revoke(self, terminate: bool = False, signal: str = "SIGTERM", **kwargs: Any) -> None:
        if self.app is not None:
            self.app.control.revoke(
                [r.id for r in self.results], terminate=terminate, signal=signal
            )

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        return self.join(timeout=timeout, propagate=propagate, on_message=on_message)

    def join(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        """Results in order, waiting for each; ``timeout`` covers the whole set."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values: list[Any] = []
        for r in self.results:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"the group was not ready within {timeout} s")
            values.append(r.get(timeout=remaining, propagate=propagate, on_message=on_message))
        return values

    join_native = join

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"


class GroupResult(ResultSet):
    """The results of a group, with the group's id (saveable in the backend)."""

    def __init__(
        self,
        id: str | None = None,
        results: Sequence[AsyncResult] = (),
        parent: AsyncResult | None = None,
        app: App | None = None,
    ) -> None:
        super().__init__(results, app)
        self.id = id
        self.parent = parent

    def save(self) -> GroupResult:
        assert self.app is not None and self.app.backend is not None and self.id
        self.app.backend.save_group(self.id, self.as_tuple())
        return self

    def delete(self) -> None:
        assert self.app is not None and self.app.backend is not None and self.id
        self.app.backend.delete_group(self.id)

    @classmethod
    def restore(cls, group_id: str, app: App | None = None) -> GroupResult | None:
        from tq.app.context import current_app

        app = app or current_app()
        if app is None or app.backend is None:
            return None
        data = app.backend.restore_group(group_id)
        if data is None:
            return None
        result = result_from_tuple(data, app)
        return result if isinstance(result, GroupResult) else None

    def as_tuple(self) -> list[Any]:
        return [[self.id, None], [r.as_tuple() for r in self.results]]

    @property
    def children(self) -> list[AsyncResult]:
        return self.results

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, GroupResult) and other.id == self.id and other.results == self.results
        )

    def __hash__(self) -> int:
        return hash(self.id)


def result_from_tuple(data: Any, app: App | None = None) -> Any:
    """Rebuild a result from Celery's tuple form (``[[id, parent], children]``)."""
    if isinstance(data, AsyncResult | ResultSet):
        return data
    (head, nodes) = data
    if isinstance(head, list | tuple):
        task_id, parent = head
    else:
        task_id, parent = head, None
    if nodes:
        return GroupResult(task_id, [result_from_tuple(c, app) for c in nodes], app=app)
    parent_result = result_from_tuple(parent, app) if parent else None
    return AsyncResult(task_id, app=app, parent=parent_result)
