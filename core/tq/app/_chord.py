"""chord: a header group whose results, in order, become the first argument of a body.

The client freezes the body (its options carry ``task_id``, ``reply_to`` and ``group_id`` =
the header's group id), puts it in every header task's ``embed.chord``, and stores the chord
size (Celery 5.7's ``.s`` key) before the last header task is published. The worker that
finishes the last part sends the body (``tq.app.workflow`` and ``tq.backend.chord``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tq.app._chain import chain, first_task_options, strip_chord_header_links
from tq.app._group import as_members, group, link_error_to_body_tasks, maybe_unroll_group
from tq.app._signature import Signature, as_list, maybe_sig, new_id
from tq.app.result import GroupResult
from tq.backend import chord as chord_keys
from tq.exceptions import ConfigurationError

if TYPE_CHECKING:
    from tq.app.base import App

#: Options of ``chord.run`` that belong to Celery's chord_unlock polling, not to any task.
_UNLOCK_OPTIONS = ("interval", "max_retries", "eager")


def chord_size(sig: Any) -> int:
    """How many header parts ``sig`` contributes to a chord (Celery's ``_descend``)."""
    sig = maybe_sig(sig)
    if isinstance(sig, group):
        return sum(chord_size(t) for t in sig.tasks)
    if isinstance(sig, chain):
        for step in reversed(sig.tasks):
            size = chord_size(step)
            if size > 0:
                return size
        return 0
    if isinstance(sig, chord):
        return chord_size(sig.body)
    return 1


def set_chord_size(app: App, group_id: str, size: int) -> None:
    """Store the chord size (``DEL .c`` then ``SET .s n EX …``), before the last part is sent."""
    backend = app.backend
    if backend is None:
        raise ConfigurationError("a chord needs a result backend: set result_backend")
    chord_keys.set_chord_size(backend, group_id, size, chord_keys.chord_expires(app.conf))


class chord(Signature):
    """Run ``header`` (a group), then ``body`` with the list of header results.

    Args:
        header: a group, or an iterable of signatures.
        body: the signature to call with the results.
        task: the name on the wire (``celery.chord``).
        args: partial arguments for the header tasks.
        kwargs: ``{"kwargs": {...}}`` extra keyword arguments for the header tasks.
        app: the app to send with.
        **options: execution options (for the header tasks and the body).
    """

    def __init__(
        self,
        header: Any,
        body: Any = None,
        task: str = "celery.chord",
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        app: App | None = None,
        **options: Any,
    ) -> None:
        kw = dict(kwargs) if kwargs else {"kwargs": {}}
        opts = dict(options.pop("options", None) or {})
        immutable = bool(options.pop("immutable", False))
        options.pop("subtask_type", None)
        super().__init__(
            task, args or (),
            {**kw, "header": as_members(header, app), "body": maybe_sig(body, app)},
            {**opts, **options}, "chord", immutable, app=app,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: App | None = None) -> chord:
        kw = dict(data["kwargs"])
        header, body = kw.pop("header", None), kw.pop("body", None)
        return cls(header, body, data.get("task") or "celery.chord", data.get("args"), kw,
                   app=app, options=data.get("options") or {},
                   immutable=bool(data.get("immutable")))

    @property
    def tasks(self) -> Any:
        return self["kwargs"]["header"]

    @tasks.setter
    def tasks(self, value: Any) -> None:
        self["kwargs"]["header"] = value

    @property
    def body(self) -> Any:
        return self["kwargs"].get("body")

    @body.setter
    def body(self, value: Any) -> None:
        self["kwargs"]["body"] = value

    @property
    def app(self) -> App:
        if self._app is None:
            members = self.tasks.tasks if isinstance(self.tasks, group) else self.tasks
            for sig in (*(members or ())[:1], self.body):
                if isinstance(sig, Signature) and sig._app is not None:
                    return sig._app
        return super().app

    def __len__(self) -> int:
        members = self.tasks.tasks if isinstance(self.tasks, group) else self.tasks
        return sum(chord_size(t) for t in members or ())

    def __call__(self, body: Any = None, **options: Any) -> Any:
        return self.apply_async((), {"body": body} if body else {}, **options)

    def __or__(self, other: Any) -> Any:
        if isinstance(other, group) and len(other.tasks) == 1:
            other = maybe_unroll_group(other)
        if isinstance(other, Signature) and not isinstance(other, group | chain):
            sig = self.clone()
            sig.body = sig.body | other
            return sig
        return super().__or__(other)

    def clone(self, args: Any = None, kwargs: Any = None, **opts: Any) -> chord:
        sig = super().clone(args, kwargs, **opts)
        assert isinstance(sig, chord)
        header = self.tasks
        sig.tasks = header.clone() if isinstance(header, group) else list(header or ())
        sig.body = maybe_sig(self.body, self._app, clone=True)
        return sig

    def link(self, callback: Signature) -> Signature:
        """Link ``callback`` to the body."""
        self.body.link(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Link ``errback`` to the body (and to the header tasks when
        ``task_allow_error_cb_on_chord_header`` is set)."""
        errback = maybe_sig(errback, self._app)
        members = self.tasks.tasks if isinstance(self.tasks, group) else self.tasks
        if self.app.conf.get("task_allow_error_cb_on_chord_header"):
            for task in members or ():
                task.link_error(errback.clone().set(immutable=True))
        for task in members or ():
            if isinstance(task, chord):
                task.link_error(errback)
        self.body.link_error(errback)
        return errback

    def set_immutable(self, immutable: bool) -> None:
        for task in self.tasks:
            task.set_immutable(immutable)

    # -- freezing and sending -----------------------------------------------------------------
    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        """Freeze the header (with this body as its chord) and the body; returns the body's
        result, whose first parent-less ancestor gets the header's GroupResult as parent."""
        if not isinstance(self.tasks, group):
            self.tasks = group(self.tasks, app=self._app)
        header_result = self.tasks.freeze(parent_id=parent_id, root_id=root_id, chord=self.body)
        self.id = self.tasks.id
        if self.body is None:
            return None
        body_result = self.body.freeze(_id, root_id=root_id, chord=chord, group_id=group_id,
                                       group_index=group_index)
        node, seen = body_result, set()
        while node is not None:
            if node.id in seen:
                raise RuntimeError("Recursive result parents")
            seen.add(node.id)
            if node.parent is None:
                node.parent = header_result
                break
            node = node.parent
        return body_result

    def apply_async(
        self, args: Any = None, kwargs: Any = None, task_id: str | None = None, **options: Any
    ) -> Any:
        """Send the header tasks; returns the body's result (``.parent`` = the header's)."""
        args = [*args, *self.args] if args and not self.immutable else self.args
        kwargs = dict(kwargs or {})
        add_to_parent = bool(options.pop("add_to_parent", True))
        body = kwargs.pop("body", None) or self.body
        kwargs = {**(self.kwargs.get("kwargs") or {}), **kwargs}
        header_delay = {k: options.pop(k) for k in ("countdown", "eta")
                        if options.get(k) is not None}
        callbacks: dict[str, Any] = {
            k: options.pop(k) for k in ("link", "link_error") if k in options
        }
        body = body.clone(**{k: v for k, v in options.items() if k != "parent_id"})
        app = self.app
        header: Any
        if isinstance(self.tasks, group):
            header = self.tasks.clone()
        else:
            header = group(list(self.tasks), app=app,
                           task_id=self.options.get("task_id") or new_id())
        if app.conf.task_always_eager:
            body = add_body_callbacks(body, {**self.options, **callbacks})
            return self.apply(args, kwargs, body=body, **options)
        merged = {**self.options, **options, **callbacks}
        for key in ("countdown", "eta"):
            merged.pop(key, None)
        option_task_id = merged.pop("task_id", None)
        return self.run(header, body, args, task_id=task_id or option_task_id, kwargs=kwargs,
                        header_delay=header_delay, add_to_parent=add_to_parent, **merged)

    def run(
        self,
        header: group,
        body: Any,
        partial_args: Sequence[Any],
        task_id: str | None = None,
        kwargs: dict[str, Any] | None = None,
        header_delay: dict[str, Any] | None = None,
        add_to_parent: bool = True,
        **options: Any,
    ) -> Any:
        app = self.app
        group_id = header.options.get("task_id") or new_id()
        root_id = body.options.get("root_id")
        options = {**self.options, **options}
        delay = dict(header_delay or {})
        for key in ("countdown", "eta", *_UNLOCK_OPTIONS):
            value = options.pop(key, None)
            if key in ("countdown", "eta") and key not in delay and value is not None:
                delay[key] = value
        if options:
            options.pop("task_id", None)
            body = add_body_callbacks(body, options)
            body.options.update({k: v for k, v in options.items() if k != "parent_id"})
        body_result = body.freeze(task_id or new_id(), group_id=group_id, root_id=root_id)
        strip_chord_header_links(body)
        for key in ("chain", "chord", "task_id"):
            options.pop(key, None)
        header.options["task_id"] = group_id
        gid, header_results = header.freeze_members(group_id=group_id, chord=body,
                                                    root_id=root_id)
        if header.tasks:
            header_result = header.apply_async(partial_args, kwargs, add_to_parent,
                                               task_id=group_id, **options, **delay)
        else:
            body.delay([])
            header_result = GroupResult(gid, header_results, app=app)
        body_result.parent = header_result
        return body_result

    def apply(
        self, args: Any = None, kwargs: Any = None, propagate: bool = True, body: Any = None,
        **options: Any,
    ) -> Any:
        """Run the header, then the body, here (eager mode)."""
        body = self.body if body is None else body
        header = self.tasks.clone() if isinstance(self.tasks, group) else group(
            list(self.tasks), app=self._app)
        values = header.apply(args, kwargs).get(propagate=propagate)
        return body.apply(args=(values,))

    def unroll_body(self) -> list[Signature]:
        """``chord(h, chain(a, b, c))`` → ``[chord(h, a), b, c]``: the rest of a task-led chain
        body runs as ordinary chain steps instead of riding along in every header task."""
        sig = self.clone()
        steps = sig.body.unchain_tasks()
        sig.body = steps[0].clone(**first_task_options(sig.body))
        return [sig, *steps[1:]]

    def __repr__(self) -> str:
        if self.body is not None:
            return f"%{self.body.name}({self.tasks!r})"
        return f"<chord without body: {self.tasks!r}>"


def add_body_callbacks(body: Any, options: dict[str, Any]) -> Any:
    """Move ``link``/``link_error`` from ``options`` to the body (a copy when any)."""
    callbacks = as_list(options.pop("link", None))
    errbacks = as_list(options.pop("link_error", None))
    if callbacks or errbacks:
        body = maybe_sig(body, clone=True)
        if isinstance(body, group):
            body.tasks = [maybe_sig(t, clone=True) for t in body.tasks]
    for callback in callbacks:
        callback = maybe_sig(callback, body._app, clone=True)
        if isinstance(body, group) and not body.tasks:
            body.append_to_list_option("link", callback)
        else:
            body.link(callback)
    for errback in errbacks:
        errback = maybe_sig(errback, body._app)
        if isinstance(body, group):
            link_error_to_body_tasks(body, errback)
        else:
            body.append_to_list_option("link_error", errback)
    return body
