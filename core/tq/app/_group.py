"""group: tasks run in parallel, as one GroupResult.

Every member is sent at once with ``headers.group = <gid>`` and ``group_index = i``; nothing
is written to Redis at send time. A group that is a chord header also carries the chord body
in each member's ``embed.chord``, and the chord size is stored (``.s``, after ``DEL .c``)
before the last member is published. The chord itself lives in ``tq.app._chord``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from tq.app import context
from tq.app._signature import Composite, Signature, as_list, maybe_sig, new_id
from tq.app.result import GroupResult

if TYPE_CHECKING:
    from tq.app.base import App


def maybe_unroll_group(sig: Any) -> Any:
    """A group of one task is that task."""
    if isinstance(sig, group) and len(sig.tasks) == 1:
        return sig.tasks[0]
    return sig


def is_empty_group(sig: Any) -> bool:
    return isinstance(sig, group) and not sig.tasks


class group(Composite):
    """Run tasks in parallel.

    Args:
        *tasks: signatures, or one iterable of signatures (a generator is read at once).
        app: the app to send with.
        **options: execution options applied to every member.
    """

    def __init__(self, *tasks: Any, app: App | None = None, **options: Any) -> None:
        items: Any = tasks
        if len(tasks) == 1:
            items = tasks[0]
            if isinstance(items, group):
                items = items.tasks
            elif isinstance(items, dict):
                items = [maybe_sig(items, app, clone=True)]
        members = [maybe_sig(t, app) for t in items]
        super().__init__("celery.group", (), {"tasks": members}, options, "group", app=app)

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: App | None = None) -> group:
        sig = cls(list(data["kwargs"].get("tasks") or ()), app=app, **data["options"])
        sig["immutable"] = bool(data.get("immutable"))
        return sig

    def __len__(self) -> int:
        return len(self.tasks)

    def __call__(self, *partial_args: Any, **options: Any) -> Any:
        return self.apply_async(partial_args, **options)

    def __or__(self, other: Any) -> Any:
        from tq.app._chord import chord

        if is_empty_group(other):
            return self
        if not isinstance(other, Signature):
            return NotImplemented
        return chord(self, body=other, app=self._app)

    def set_immutable(self, immutable: bool) -> None:
        for task in self.tasks:
            task.set_immutable(immutable)

    def link(self, callback: Signature) -> Signature:
        """Link ``callback`` (made immutable) to the first member only, as Celery does."""
        sig = maybe_sig(callback, self._app, clone=True).set(immutable=True)
        return self.tasks[0].link(sig)  # type: ignore[no-any-return]

    def link_error(self, errback: Signature) -> Any:
        """Link ``errback`` to every member (it may be called more than once)."""
        sig = maybe_sig(errback, self._app)
        return tuple(task.link_error(sig.clone()) for task in self.tasks)

    def skew(self, start: float = 1.0, stop: float | None = None, step: float = 1.0) -> group:
        """Spread the members' countdowns: ``start``, ``start + step``, ... up to ``stop``."""
        value = start
        for task in self.tasks:
            task.set(countdown=value)
            if stop is None or value + step <= stop:
                value += step
        return self

    # -- sending ------------------------------------------------------------------------------
    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        add_to_parent: bool = True,
        link: Any = None,
        link_error: Any = None,
        **options: Any,
    ) -> Any:
        """Send every member.

        Returns:
            The ``GroupResult`` (members in order).

        Raises:
            TypeError: ``link``/``link_error`` given (use a chord, or link the members).
        """
        if link is not None:
            raise TypeError("Cannot add link to group: use a chord")
        if link_error is not None:
            raise TypeError("Cannot add link to group: do that on individual tasks")
        app = self.app
        if app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        if not self.tasks:
            return self.freeze()
        opts, group_id, root_id = self._freeze_gid(options)
        prepared = list(self._prepared(self.tasks, [], group_id, root_id))
        results = self._apply_tasks(prepared, args, kwargs, **opts)
        result: Any = GroupResult(group_id, results, app=app)
        if len(results) == 1 and isinstance(results[0], GroupResult):
            result = results[0]
        parent = context.current_request()
        if add_to_parent and parent is not None and not parent.called_directly and parent.id:
            parent.children.append(result)
        return result

    def _freeze_gid(self, options: dict[str, Any]) -> tuple[dict[str, Any], str, str | None]:
        """Merged options, with the group's ``task_id`` turned into its ``group_id``."""
        opts = {
            **self.options,
            **{k: v for k, v in options.items() if k != "group_id" or k not in self.options},
        }
        group_id = opts.pop("task_id", None) or new_id()
        opts["group_id"] = group_id
        return opts, group_id, opts.get("root_id")

    def _prepared(
        self, tasks: Sequence[Any], partial_args: Sequence[Any], group_id: str,
        root_id: str | None,
    ) -> Iterator[tuple[Signature, Any]]:
        """Copies of the members (nested groups unrolled), each frozen with its index."""
        from tq.app._chain import chain

        for index, task in enumerate(tasks):
            sig = maybe_sig(task, self._app, clone=True)
            if isinstance(sig, group):
                yield from self._prepared(sig.tasks, partial_args, group_id, root_id)
            elif isinstance(sig, chain) and not sig.tasks:
                continue
            else:
                if partial_args and not sig.immutable:
                    sig.args = [*partial_args, *sig.args]
                yield sig, sig.freeze(group_id=group_id, root_id=root_id, group_index=index)

    def _apply_tasks(
        self,
        prepared: list[tuple[Signature, Any]],
        args: Sequence[Any] | None,
        kwargs: dict[str, Any] | None,
        chord: Any = None,
        group_index: int | None = None,
        **options: Any,
    ) -> list[Any]:
        from tq.app._chord import chord_size, set_chord_size

        size = 0
        results = []
        for position, (sig, res) in enumerate(prepared):
            body = chord if chord is not None else sig.options.get("chord")
            size += chord_size(sig)
            if body is not None and position == len(prepared) - 1:
                set_chord_size(self.app, options["group_id"], size)
            sig.apply_async(args, kwargs, add_to_parent=False, chord=body, **options)
            results.append(res)
        return results

    def apply(
        self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Run every member here (eager mode)."""
        if not self.tasks:
            return self.freeze()
        opts, group_id, root_id = self._freeze_gid(options)
        opts.pop("group_id", None)
        results = [sig.apply(args, kwargs, **opts)
                   for sig, _ in self._prepared(self.tasks, [], group_id, root_id)]
        return GroupResult(group_id, results, app=self.app)

    # -- freezing -----------------------------------------------------------------------------
    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> GroupResult:
        """Fix the group id and every member's id now; returns the ``GroupResult``."""
        gid, results = self.freeze_members(_id, group_id, chord, root_id, parent_id, group_index)
        return GroupResult(gid, results, app=self.app)

    def freeze_members(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> tuple[str, list[Any]]:
        """Freeze in place: nested groups are flattened and members are indexed in order."""
        from tq.app._chain import chain

        opts = self.options
        gid = opts.get("task_id")
        if gid is None:
            gid = opts["task_id"] = _id or new_id()
        if group_id:
            opts["group_id"] = group_id
        if chord:
            opts["chord"] = chord
        if group_index is not None:
            opts["group_index"] = group_index
        root_id = opts.setdefault("root_id", root_id)
        parent_id = opts.setdefault("parent_id", parent_id)
        flat: list[Signature] = []
        results: list[Any] = []
        stack: deque[Any] = deque(self.tasks)
        while stack:
            sig = maybe_sig(stack.popleft(), self._app, clone=True)
            if isinstance(sig, group):
                # As Celery: extendleft reverses a nested group's members, and the indexes
                # (hence a chord's result order) follow.
                stack.extendleft(sig.tasks)
            elif not (isinstance(sig, chain) and not sig.tasks):
                flat.append(sig)
                results.append(sig.freeze(group_id=group_id, chord=chord, root_id=root_id,
                                          parent_id=parent_id, group_index=len(flat) - 1))
        self.tasks = flat
        return gid, results

    def __repr__(self) -> str:
        return f"group({self.tasks!r})" if self.tasks else "group(<empty>)"


def clear_chord_option(sig: Any) -> None:
    """Remove the chord body from the terminal tasks of ``sig``."""
    from tq.app._chain import chain
    from tq.app._chord import chord

    sig.options.pop("chord", None)
    if isinstance(sig, group):
        for task in sig.tasks:
            clear_chord_option(task)
    elif isinstance(sig, chain) and sig.tasks:
        clear_chord_option(sig.tasks[-1])
    elif isinstance(sig, chord) and sig.body is not None:
        clear_chord_option(sig.body)


def link_error_to_body_tasks(sig: Any, errback: Signature, runs_as_group: bool = True) -> None:
    """Link ``errback`` to each task of a group chord body (its own errbacks win)."""
    from tq.app._chord import chord

    if isinstance(sig, group):
        if runs_as_group and sig.options.get("link_error") is not None:
            sig.append_to_list_option("link_error", errback.clone())
        else:
            for task in sig.tasks:
                link_error_to_body_tasks(task, errback, runs_as_group=False)
    elif isinstance(sig, chord):
        link_error_to_body_tasks(sig.body, errback)
    else:
        sig.link_error(errback.clone())


def as_members(tasks: Any, app: App | None) -> list[Any]:
    """A chord header as a list of signatures (from a group, a chain, one task, or a list)."""
    from tq.app._chain import chain

    if isinstance(tasks, dict) and not isinstance(tasks, Signature):
        tasks = maybe_sig(tasks, app)
    if isinstance(tasks, group | chain):
        return list(tasks.tasks)
    if isinstance(tasks, Signature):
        return [tasks]
    return [maybe_sig(t, app) for t in as_list(tasks)]
