"""Signature: one task call (name, args, kwargs, options) that can be passed around, as the
dict Celery puts on the wire.

The workflow classes (chain, group, chord, map/starmap, chunks) subclass it in the sibling
private modules; ``tq.app.canvas`` is the public face of all of them. Imports only the app
layer's context and result modules at the top; the siblings are imported where they are used,
so any import order works.
"""

from __future__ import annotations

import copy
import os
import threading
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tq.app import context

if TYPE_CHECKING:
    from tq.app.base import App
    from tq.app.result import AsyncResult
    from tq.app.task import Task

#: Options that a merge never overrides once set: changing them would stall a group or chord
#: that waits for the task (Celery's ``_IMMUTABLE_OPTIONS``).
IMMUTABLE_OPTIONS = frozenset({"group_id", "stamped_headers"})


def thread_oid(app: App) -> str:
    """Celery's ``app.thread_oid`` (uuid3 of node, process, thread and app): the ``reply_to``
    that freezing writes into a signature's options, so frozen signatures look alike."""
    ident = f"{uuid.getnode():x}-{os.getpid():x}-{threading.get_ident():x}-{id(app):x}"
    return str(uuid.uuid3(uuid.NAMESPACE_OID, ident))


def new_id() -> str:
    return str(uuid.uuid4())


def as_list(value: Any) -> list[Any]:
    """``None`` → ``[]``; a single signature (a dict) → ``[sig]``; a sequence → a list."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    return list(value)


class Signature(dict[str, Any]):
    """A task call that can be passed around: name, args, kwargs and execution options.

    It *is* a dict with Celery's keys (``task``, ``args``, ``kwargs``, ``options``,
    ``subtask_type``, ``immutable``), so it serializes exactly as Celery's does.

    Args:
        task: a task name, a Task, or a signature dict (then the other arguments are ignored).
        args: positional arguments.
        kwargs: keyword arguments.
        options: execution options (those of ``apply_async``).
        subtask_type: ``None`` for a plain task; ``"chain"``, ``"group"``, ``"chord"``, ...
        immutable: if true, arguments given when it is called are ignored.
        app: the app to send it with (default: the current app).
        **ex: more options.
    """

    def __init__(
        self,
        task: Any = None,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        subtask_type: str | None = None,
        immutable: bool = False,
        app: App | None = None,
        **ex: Any,
    ) -> None:
        if isinstance(task, dict):  # rebuilding from a wire dict
            super().__init__(task)
            self.setdefault("args", [])
            self.setdefault("kwargs", {})
            self.setdefault("options", {})
            self.setdefault("subtask_type", None)
            self.setdefault("immutable", False)
        else:
            name = task if isinstance(task, str) or task is None else task.name
            super().__init__(
                task=name,
                args=list(args or ()),
                kwargs=dict(kwargs or {}),
                options={**(options or {}), **ex},
                subtask_type=subtask_type,
                immutable=immutable,
            )
        self._app = app

    # -- fields -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self["task"])

    @property
    def task(self) -> str:
        return str(self["task"])

    @property
    def args(self) -> list[Any]:
        return list(self["args"])

    @args.setter
    def args(self, value: Sequence[Any]) -> None:
        self["args"] = list(value)

    @property
    def kwargs(self) -> dict[str, Any]:
        value: dict[str, Any] = self["kwargs"]
        return value

    @kwargs.setter
    def kwargs(self, value: dict[str, Any]) -> None:
        self["kwargs"] = value

    @property
    def options(self) -> dict[str, Any]:
        value: dict[str, Any] = self["options"]
        return value

    @options.setter
    def options(self, value: dict[str, Any]) -> None:
        self["options"] = value

    @property
    def subtask_type(self) -> str | None:
        return self.get("subtask_type")

    @property
    def immutable(self) -> bool:
        return bool(self.get("immutable"))

    @property
    def id(self) -> str | None:
        return self.options.get("task_id")

    @id.setter
    def id(self, value: str | None) -> None:
        self.options["task_id"] = value

    @property
    def app(self) -> App:
        app = self._app or context.current_app()
        if app is None:
            raise RuntimeError(f"signature {self.name} is not bound to an app")
        return app

    @property
    def type(self) -> Task:
        """The registered task (raises ``NotRegistered`` if this app does not know it)."""
        return self.app.tasks[self.name]

    def AsyncResult(self, task_id: str) -> AsyncResult:
        from tq.app.result import AsyncResult

        return AsyncResult(task_id, app=self._app or context.current_app(), task_name=self.name)

    # -- building -----------------------------------------------------------------------------
    def _merge(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        force: bool = False,
    ) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
        """Partial args prepended, kwargs and options merged (args only if mutable or ``force``)."""
        new_options = self.options
        if options is not None:
            locked = IMMUTABLE_OPTIONS | set(self.options.get("stamped_headers") or ())
            new_options = {
                **self.options,
                **{k: v for k, v in options.items() if k not in locked or k not in self.options},
            }
        if self.immutable and not force:
            return self.args, dict(self.kwargs), new_options
        return (
            [*(args or ()), *self["args"]],
            {**self.kwargs, **(kwargs or {})},
            new_options,
        )

    def clone(
        self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None, **opts: Any
    ) -> Signature:
        """A copy (of the same workflow type) with ``args`` prepended and ``kwargs`` and
        options merged. The options are deep-copied so links can be changed independently."""
        if args or kwargs or opts:
            new_args, new_kwargs, new_opts = self._merge(args, kwargs, opts)
        else:
            new_args, new_kwargs, new_opts = self.args, dict(self.kwargs), self.options
        data = {
            "task": self["task"],
            "args": list(new_args),
            "kwargs": new_kwargs,
            "options": copy.deepcopy(new_opts),
            "subtask_type": self.subtask_type,
            "immutable": self.immutable,
        }
        return self.from_dict(data, app=self._app)

    partial = clone

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: App | None = None) -> Signature:
        """Rebuild a signature of the right workflow class from a (wire) dict."""
        from tq.app.canvas import signature

        return signature(data, app=app)

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set execution options in place; returns the signature for chaining."""
        if immutable is not None:
            self.set_immutable(immutable)
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = immutable

    def _list_option(self, key: str) -> list[Any]:
        items = self.options.setdefault(key, [])
        if not isinstance(items, list):
            items = self.options[key] = as_list(items)
        return items

    def append_to_list_option(self, key: str, value: Any) -> Any:
        items = self._list_option(key)
        if value not in items:
            items.append(value)
        return value

    def extend_list_option(self, key: str, value: Any) -> None:
        self._list_option(key).extend(as_list(value))

    def link(self, callback: Signature) -> Signature:
        """Send ``callback`` (with this task's result prepended) when this task succeeds."""
        return self.append_to_list_option("link", callback)  # type: ignore[no-any-return]

    def link_error(self, errback: Signature) -> Signature:
        """Call or send ``errback`` when this task fails."""
        return self.append_to_list_option("link_error", errback)  # type: ignore[no-any-return]

    def on_error(self, errback: Signature) -> Signature:
        """``link_error`` that returns this signature (for chaining)."""
        self.link_error(errback)
        return self

    def flatten_links(self) -> list[Signature]:
        """This signature followed by its callbacks, recursively."""
        out: list[Signature] = [self]
        for link in as_list(self.options.get("link")):
            out.extend(maybe_sig(link, self._app).flatten_links())
        return out

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        """Fix the task id (and the other ids given) now, so that the result can be referred
        to before the task is sent. An id already set is kept.

        Returns:
            The ``AsyncResult`` the task will have.
        """
        opts = self.options
        tid = opts.get("task_id")
        if tid is None:
            tid = opts["task_id"] = _id or new_id()
        if root_id:
            opts["root_id"] = root_id
        if parent_id:
            opts["parent_id"] = parent_id
        if "reply_to" not in opts:
            opts["reply_to"] = thread_oid(self.app)
        if group_id and "group_id" not in opts:
            opts["group_id"] = group_id
        if chord:
            opts["chord"] = chord
        if group_index is not None:
            opts["group_index"] = group_index
        return self.AsyncResult(tid)

    # -- calling ------------------------------------------------------------------------------
    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Send the task, with ``args`` prepended and ``kwargs``/options merged.

        Returns:
            The task's ``AsyncResult``.
        """
        options = {k: v for k, v in options.items() if v is not None}
        if args or kwargs or options:
            call_args, call_kwargs, opts = self._merge(args, kwargs, options)
        else:
            call_args, call_kwargs, opts = self.args, dict(self.kwargs), dict(self.options)
        app = self.app
        if app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        task = app.tasks.get(self.name)
        if task is not None:
            return task.apply_async(call_args, call_kwargs, **opts)
        return app.send_task(self.name, call_args, call_kwargs, **opts)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Run the task here (``Task.apply``), with partial arguments and options merged."""
        options = {k: v for k, v in options.items() if v is not None}
        call_args, call_kwargs, opts = self._merge(args, kwargs, options)
        return self.type.apply(call_args, call_kwargs, **opts)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task body in this process with the partial arguments applied."""
        call_args, call_kwargs, _ = self._merge(args, kwargs, None)
        return self.type(*call_args, **call_kwargs)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A clone with more partial arguments."""
        return self.clone(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable clone with more partial arguments."""
        return self.clone(args, kwargs).set(immutable=True)

    def __invert__(self) -> Any:
        return self.apply_async().get()

    def __or__(self, other: Any) -> Any:
        from tq.app._chain import chain
        from tq.app._group import group, maybe_unroll_group

        if isinstance(other, chain):
            return chain([self, *other.unchain_tasks()], app=self._app)
        if isinstance(other, group):
            return chain([self, maybe_unroll_group(other)], app=self._app)
        if isinstance(other, Signature):
            return chain([self, other], app=self._app)
        return NotImplemented

    __ior__ = __or__  # dict's |= must not merge keys here

    # -- copying and showing -----------------------------------------------------------------
    def __deepcopy__(self, memo: dict[int, Any]) -> Signature:
        data = {k: copy.deepcopy(v, memo) for k, v in self.items()}
        return self.from_dict(data, app=self._app)

    def __reduce__(self) -> tuple[Any, ...]:
        from tq.app.canvas import signature

        return signature, (dict(self),)

    def reprcall(self, *args: Any, **kwargs: Any) -> str:
        call_args, call_kwargs, _ = self._merge(args, kwargs, {}, force=True)
        parts = [repr(a) for a in call_args] + [f"{k}={v!r}" for k, v in call_kwargs.items()]
        return f"{self.name}({', '.join(parts)})"

    def __repr__(self) -> str:
        return self.reprcall() + ("!" if self.immutable else "")


def maybe_sig(value: Any, app: App | None = None, clone: bool = False) -> Any:
    """A Signature from a signature or dict (``None`` stays ``None``), bound to ``app``."""
    if value is None:
        return None
    if isinstance(value, Signature):
        sig = value.clone() if clone else value
    elif isinstance(value, dict):
        sig = Signature.from_dict(value, app=app)
    else:
        return value
    if app is not None:
        sig._app = app
    return sig


class Composite(Signature):
    """A signature whose members are kept in ``kwargs["tasks"]`` (chain and group); unbound,
    it belongs to its first member's app."""

    @property
    def tasks(self) -> list[Any]:
        value: list[Any] = self["kwargs"]["tasks"]
        return value

    @tasks.setter
    def tasks(self, value: list[Any]) -> None:
        self["kwargs"]["tasks"] = value

    @property
    def app(self) -> App:
        if self._app is None and self.tasks and isinstance(self.tasks[0], Signature):
            return self.tasks[0].app
        return super().app
