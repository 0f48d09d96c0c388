"""chain: tasks run one after another, each receiving the previous result.

On the wire only the first task is sent; it carries the remaining steps, frozen (ids fixed) and
in *reverse* order, in ``embed.chain``. Each worker pops the last element and sends it with the
rest as its own chain. The result returned is the last task's, with ``.parent`` leading back
to the first. A group followed by a task becomes a chord. Mirrors Celery 5.7's
``_chain.prepare_steps``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tq.app._signature import Composite, Signature, as_list, maybe_sig

if TYPE_CHECKING:
    from tq.app.base import App

#: Options a chain consumes itself instead of passing them on to its first task.
_RUN_OPTIONS = frozenset(
    {"chord", "group_id", "group_index", "link", "link_error", "parent_id", "root_id", "task_id"}
)


class chain(Composite):
    """Run tasks in sequence: ``chain(a, b, c)`` is ``a | b | c``.

    Args:
        *tasks: signatures, or one iterable of signatures.
        app: the app to send with.
        **options: execution options for the chain (``link`` goes to the last task,
            ``link_error`` to every task).
    """

    def __init__(self, *tasks: Any, app: App | None = None, **options: Any) -> None:
        items: Any = tasks[0] if len(tasks) == 1 and not isinstance(tasks[0], dict) else tasks
        steps: list[Any] = []
        for item in items:
            replaced = _merge_step(steps, maybe_sig(item, app))
            if replaced is not None:  # ``chain(group)``: nothing to merge the group into
                steps.append(replaced)
        super().__init__("celery.chain", (), {"tasks": steps}, options, "chain", app=app)

    @classmethod
    def from_steps(cls, steps: Sequence[Any], app: App | None = None, **options: Any) -> chain:
        """A chain of exactly these steps (no folding, as Celery's ``_chain`` does)."""
        sig = cls(app=app, **options)
        sig.tasks = [maybe_sig(t, app) for t in steps]
        return sig

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: App | None = None) -> chain:
        sig = cls.from_steps(list(data["kwargs"].get("tasks") or ()), app, **data["options"])
        sig["args"] = list(data.get("args") or ())
        sig["immutable"] = bool(data.get("immutable"))
        return sig

    def clone(self, args: Any = None, kwargs: Any = None, **opts: Any) -> chain:
        sig = super().clone(args, kwargs, **opts)
        assert isinstance(sig, chain)
        sig["kwargs"] = {**sig["kwargs"], "tasks": [maybe_sig(t, self._app, clone=True)
                                                    for t in self.tasks]}
        return sig

    def unchain_tasks(self) -> list[Signature]:
        """Clones of the tasks, with the chain's ``link`` on the last and its ``link_error``
        on every one."""
        tasks = [maybe_sig(t, self._app, clone=True) for t in self.tasks]
        for sig in as_list(self.options.get("link")):
            tasks[-1].link(sig)
        for sig in as_list(self.options.get("link_error")):
            for task in tasks:
                task.link_error(sig)
        return tasks

    def __or__(self, other: Any) -> Any:
        if not isinstance(other, Signature):
            return NotImplemented
        sig = self.clone()
        result = _merge_step(sig.tasks, other)
        return sig if result is None else result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs) if self.tasks else None

    # -- sending ------------------------------------------------------------------------------
    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """Send the first task with the rest frozen in its ``chain``.

        Returns:
            The last task's result (``.parent`` leads back to the first).
        """
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        return self.run(args, kwargs, **{**self.options, **options})

    def run(
        self,
        args: Any = None,
        kwargs: Any = None,
        group_id: str | None = None,
        chord: Any = None,
        task_id: str | None = None,
        link: Any = None,
        link_error: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
        **options: Any,
    ) -> Any:
        args = [*args, *self.args] if args and not self.immutable else self.args
        tasks, results = self.prepare_steps(
            args, kwargs or {}, self.tasks, root_id, link_error, task_id, group_id, chord,
            group_index=group_index,
        )
        if not results:
            return None
        if link:
            tasks[0].extend_list_option("link", link)
        first = tasks.pop()
        options["chain"] = [*options["chain"], *tasks] if options.get("chain") else tasks
        if parent_id:
            options["parent_id"] = parent_id
        sent = first.apply_async(**options)
        return sent if not tasks else results[0]

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        """Fix every task's id in place; returns the last task's result."""
        _, results = self.prepare_steps(
            self.args, self.kwargs.get("kwargs") or {}, self.tasks, root_id, None, _id,
            group_id, chord, clone=False, group_index=group_index,
        )
        self.id = results[0].id if results else _id
        return results[0] if results else None

    def prepare_steps(
        self,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        tasks: Sequence[Any],
        root_id: str | None = None,
        link_error: Any = None,
        last_task_id: str | None = None,
        group_id: str | None = None,
        chord_body: Any = None,
        clone: bool = True,
        group_index: int | None = None,
    ) -> tuple[list[Signature], list[Any]]:
        """Flatten nested chains, promote ``group | task`` to chords and freeze every step,
        walking from the last task to the first.

        Returns:
            ``(tasks, results)``, both last-first: ``tasks`` is what goes into ``embed.chain``
            (after popping the first task off its end).
        """
        from tq.app._chord import chord
        from tq.app._group import group, is_empty_group, maybe_unroll_group

        app = self.app
        steps = _normalize_head(deque(tasks), app, clone)
        walk = _Walk(app, root_id, as_list(link_error))
        while steps:
            task = maybe_sig(steps.pop(), app)
            is_first = not steps
            if isinstance(task, group):
                task = maybe_unroll_group(task)
                if is_empty_group(task) and (steps or walk.prev_task is not None):
                    continue
            if clone and isinstance(task, chord) and is_chain_led_by_task(task.body):
                steps.extend(task.unroll_body())
                continue
            if clone:
                task = task.clone(args, kwargs) if is_first else task.clone()
            elif is_first:
                task.args = [*args, *task.args]
            if isinstance(task, chain):
                steps.extend(task.tasks)
                continue
            if isinstance(task, group) and walk.prev_task is not None:
                task = walk.promote(task)
            if not walk.frozen:  # the chain's last task
                res = task.freeze(last_task_id, root_id=root_id, group_id=group_id,
                                  chord=chord_body, group_index=group_index)
            else:
                res = task.freeze(root_id=root_id)
            walk.add(task, res)
        if clone:
            for task in walk.out:
                strip_chord_header_links(task)
        return walk.out, walk.results

    def apply(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """Run every step here, in order (eager mode)."""
        options = {**self.options, **options}
        link = options.pop("link", None)
        options.pop("task_id", None)
        fargs: Any = args or ()
        fkwargs: Any = kwargs or {}
        last: Any = None
        tasks = [maybe_sig(t, self._app) for t in self.tasks]
        for index, task in enumerate(tasks):
            step = task.clone()
            if link and index == len(tasks) - 1:
                step.extend_list_option("link", link)
            res = step.apply((last.get(),) if last is not None else fargs, fkwargs, **options)
            res.parent, last, fargs, fkwargs = last, res, (), {}
        return last

    def __repr__(self) -> str:
        if not self.tasks:
            return "<chain: empty>"
        return " | ".join(repr(t) for t in self.tasks)


class _Walk:
    """The state of ``prepare_steps`` walking a chain from its last task to its first."""

    def __init__(self, app: App, root_id: str | None, errbacks: list[Any]) -> None:
        self.app = app
        self.root_id = root_id
        self.errbacks = errbacks
        self.out: list[Signature] = []
        self.results: list[Any] = []
        self.frozen = 0
        self.prev_task: Any = None
        self.prev_res: Any = None

    def promote(self, header: Any) -> Any:
        """``group | task`` → a chord whose body is the task frozen just before."""
        from tq.app._chord import chord

        self.out.pop()
        body_res = self.results.pop()
        body_id = getattr(self.prev_res, "task_id", None) if self.prev_res is not None else None
        opts = {"task_id": body_id} if body_id else {}
        sig = chord(header, body=self.prev_task, root_id=self.root_id, app=self.app, **opts)
        self.prev_task = self.out[-1] if self.out else None
        # The result that pointed at the body is relinked to the chord's result.
        node = self.results[-1] if self.results else None
        while node is not None and node.parent is not body_res:
            node = node.parent
        if node is not None:
            node.parent = None
            self.prev_res = node
        return sig

    def add(self, task: Any, res: Any) -> None:
        """Record a frozen step: link results, add the chain's errbacks."""
        from tq.app._chord import chord

        self.frozen += 1
        if self.prev_task is not None and self.prev_res is not None and (
            self.prev_res.parent is None
        ):
            self.prev_res.parent = res
        for errback in self.errbacks:
            task.link_error(errback)
            if isinstance(task, chord) and task.body is not None:
                task.body.link_error(errback)
        self.out.append(task)
        self.results.append(res)
        self.prev_task, self.prev_res = task, res
        if isinstance(task, chord):  # later (earlier) steps link to the header's result
            while self.prev_res.parent is not None:
                self.prev_res = self.prev_res.parent


def _normalize_head(steps: deque[Any], app: App, clone: bool) -> deque[Any]:
    """Splice leading nested chains and drop leading empty groups, so the first real task is
    the one that receives the chain's partial arguments."""
    from tq.app._group import group, maybe_unroll_group

    stripped = None
    while steps:
        head = steps[0] = maybe_sig(steps[0], app)
        if isinstance(head, chain):
            steps.popleft()
            steps.extendleft(reversed((head.clone() if clone else head).tasks))
            continue
        if isinstance(head, group):
            head = steps[0] = maybe_unroll_group(head)
            if len(steps) > 1 and isinstance(head, group) and not head.tasks:
                stripped = steps.popleft()
                continue
        break
    if stripped is not None and not steps:
        steps.append(stripped)
    return steps


def _merge_step(steps: list[Any], other: Any) -> Any:
    """Add ``other`` to ``steps`` by the rules of ``chain | other``. Returns None, or the
    value that replaces the chain (``chain() | group`` is the group)."""
    from tq.app._chord import chord
    from tq.app._group import group, is_empty_group, maybe_unroll_group

    if is_empty_group(other):
        return None
    if isinstance(other, group):
        other = maybe_unroll_group(other)
        if not isinstance(other, group):
            return _merge_step(steps, other)
        if not steps:
            return other
        if isinstance(steps[-1], chord):
            steps[-1].body = steps[-1].body | other
        else:
            steps.append(other)
        return None
    if isinstance(other, chain):
        for task in other.unchain_tasks():
            _merge_step(steps, task)
        return None
    if steps and isinstance(steps[-1], group):
        steps[-1] = chord(steps[-1], other)
        if len(steps) > 1 and isinstance(steps[-2], chord):
            steps[-2].body = steps[-2].body | steps.pop()
    elif steps and isinstance(steps[-1], chord) and not isinstance(other, chord):
        steps[-1].body = steps[-1].body | other
    else:
        steps.append(other)
    return None


def is_chain_led_by_task(body: Any) -> bool:
    """A chain whose first step is not a group (such a chord body can be split off)."""
    from tq.app._group import group

    return isinstance(body, chain) and bool(body.tasks) and not isinstance(body.tasks[0], group)


def first_task_options(sig: chain) -> dict[str, Any]:
    """The options a chain passes on to its first task when it runs."""
    return {k: v for k, v in sig.options.items() if k not in _RUN_OPTIONS}


def strip_chord_header_links(sig: Any) -> None:
    """Drop the copies of a chord body that freezing put on header tasks (the chord puts them
    back when it runs), so nested chords do not multiply message sizes."""
    from tq.app._chord import chord
    from tq.app._group import clear_chord_option, group

    if isinstance(sig, chord):
        clear_chord_option(sig.tasks)
        strip_chord_header_links(sig.tasks)
        if sig.body is not None:
            strip_chord_header_links(sig.body)
    elif isinstance(sig, group | chain):
        for task in sig.tasks:
            strip_chord_header_links(task)
