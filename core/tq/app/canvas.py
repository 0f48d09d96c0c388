"""Signatures and workflows, as Celery users write them: ``signature``, ``chain`` (``|``),
``group``, ``chord``, ``chunks``, ``xmap`` and ``xstarmap``. Blocking results only; no
promise objects.

Every workflow is a ``Signature`` (a dict with Celery's keys and ``subtask_type``), so a
workflow put on the wire by Celery is rebuilt here with ``signature(d)`` and the other way
round. The classes live in private sibling modules (``_signature``, ``_chain``, ``_group``,
``_chord``); this module is their public face. ``map``, ``starmap`` and ``chunks`` run on
workers as Celery's built-in tasks ``celery.map``, ``celery.starmap`` and ``celery.chunks``
(registered by ``tq.app.workflow.register_builtins``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from tq.app._chain import chain
from tq.app._chord import chord
from tq.app._group import group
from tq.app._signature import Signature, maybe_sig

if TYPE_CHECKING:
    from tq.app.base import App

__all__ = [
    "Signature",
    "chain",
    "chord",
    "chunks",
    "group",
    "maybe_signature",
    "signature",
    "subtask",
    "xmap",
    "xstarmap",
]


def signature(varies: Any, *args: Any, app: App | None = None, **kwargs: Any) -> Signature:
    """A Signature from a task name, a Task, or a signature dict.

    A dict is rebuilt as the workflow class its ``subtask_type`` names (a chain dict becomes a
    ``chain`` ...); a Signature is cloned.
    """
    if isinstance(varies, Signature):
        return varies.clone()
    if isinstance(varies, dict):
        kind = _KINDS.get(varies.get("subtask_type") or "")
        if kind is None:
            return Signature(varies, app=app)
        rebuilt: Signature = kind.from_dict(varies, app=app)
        return rebuilt
    sig = Signature(varies, *args, **kwargs)
    sig._app = app
    return sig


subtask = signature


def maybe_signature(value: Any, app: App | None = None, clone: bool = False) -> Any:
    """A Signature from a signature or a dict; ``None`` stays ``None``."""
    return maybe_sig(value, app, clone)


class _basemap(Signature):
    """A built-in task that calls ``task`` once per item of ``it``, in one worker."""

    builtin = ""

    def __init__(self, task: Any, it: Iterable[Any], app: App | None = None, **options: Any
                 ) -> None:
        opts = dict(options.pop("options", None) or {})
        # Celery leaves subtask_type unset here, so on the wire these are plain signatures
        # of the built-in task (and are rebuilt as such).
        super().__init__(self.builtin, (), {"task": maybe_sig(task, app), "it": list(it)},
                         {**opts, **options}, None, True, app=app)

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: App | None = None) -> Signature:
        kw = data["kwargs"]
        return cls(kw["task"], kw["it"], app=app, options=data.get("options") or {})

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        _, _, opts = self._merge(options={k: v for k, v in options.items() if v is not None})
        opts = _route_as(self.app, self.kwargs["task"], opts)
        task = self.app.tasks[self.builtin]
        return task.apply_async((), {"task": self.kwargs["task"], "it": list(self.kwargs["it"])},
                                **opts)


class xmap(_basemap):
    """``[task(x) for x in it]`` in one worker (``celery.map``)."""

    builtin = "celery.map"

    def __repr__(self) -> str:
        return f"[{self.kwargs['task'].name}(x) for x in {self.kwargs['it']!r:.100}]"


class xstarmap(_basemap):
    """``[task(*x) for x in it]`` in one worker (``celery.starmap``)."""

    builtin = "celery.starmap"

    def __repr__(self) -> str:
        return f"[{self.kwargs['task'].name}(*x) for x in {self.kwargs['it']!r:.100}]"


class chunks(Signature):
    """``it`` split into parts of ``n`` argument tuples; each part is one ``celery.starmap``
    task, all sent as a group.

    Args:
        task: the signature to call with each argument tuple.
        it: the argument tuples.
        n: how many tuples each part holds.
    """

    def __init__(self, task: Any, it: Iterable[Any], n: int, app: App | None = None,
                 **options: Any) -> None:
        opts = dict(options.pop("options", None) or {})
        super().__init__("celery.chunks", (),
                         {"task": maybe_sig(task, app), "it": list(it), "n": n},
                         {**opts, **options}, None, True, app=app)

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: App | None = None) -> Signature:
        kw = data["kwargs"]
        return cls(kw["task"], kw["it"], kw["n"], app=app, options=data.get("options") or {})

    def __call__(self, **options: Any) -> Any:
        return self.apply_async(**options)

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """Send the parts as a group; returns its GroupResult."""
        return self.group().apply_async(args, kwargs, **options)

    def group(self) -> Signature:
        """The group of ``celery.starmap`` tasks, one per part."""
        task, n = self.kwargs["task"], int(self.kwargs["n"])
        parts = [xstarmap(task, part, app=self._app) for part in _split(self.kwargs["it"], n)]
        return group(parts, app=self._app)

    @classmethod
    def apply_chunks(cls, task: Any, it: Iterable[Any], n: int, app: App | None = None) -> Any:
        return cls(task, it, n, app=app)()


def _split(it: Iterable[Any], n: int) -> Iterator[list[Any]]:
    items = iter(it)
    while part := list(islice(items, n)):
        yield part


def _route_as(app: App, task: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Route a map/starmap task like the task it calls (Celery's ``route_name``)."""
    if options.get("queue") or options.get("exchange"):
        return options
    name = task.name if isinstance(task, Signature) else str(task.get("task"))
    route = app.router.route(name, (), {}, {}, app.tasks.get(name))
    if route.queue == app.conf.task_default_queue and not route.exchange:
        return options
    return {**options, "queue": route.queue, "exchange": route.exchange,
            "routing_key": route.routing_key}


#: ``subtask_type`` on the wire → the class that rebuilds it. (Celery registers xmap, xstarmap
#: and chunks too, but never writes those names: they travel as plain built-in task calls.)
_KINDS: dict[str, Any] = {
    "chain": chain,
    "group": group,
    "chord": chord,
    "xmap": xmap,
    "xstarmap": xstarmap,
    "chunks": chunks,
}
