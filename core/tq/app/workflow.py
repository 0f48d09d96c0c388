"""What a worker does after a task finished, so that workflows go on as Celery 5.7's do: send
the link callbacks and the next chain step, return chord parts (and send or fail the chord
body), call or send the errbacks, and fail the rest of a chain. Also the built-in tasks
(``celery.map``, ``celery.starmap``, ``celery.chunks`` ...) that every app registers, because
Celery clients send those names.

The worker's trace calls ``on_success`` / ``on_failure`` / ``on_revoked`` inside the child
process. None of them raises: every step is caught and logged on its own, so one broken
callback does not stop the chain or the chord. Imports the app layer's canvas and results
and ``tq.backend.chord``; never the worker.
"""

from __future__ import annotations

import functools
import inspect
import logging
import traceback as tb
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tq import states
from tq.app._signature import as_list, new_id
from tq.app.canvas import chunks, group, maybe_signature, signature
from tq.app.context import Request
from tq.backend.chord import ChordPart, ChordSettings, on_chord_part_return
from tq.exceptions import ChordError

if TYPE_CHECKING:
    from tq.app.base import App
    from tq.app.task import Task

logger = logging.getLogger(__name__)


def on_success(
    app: App, task: Task, request: Request, retval: Any, *, store: Callable[[], Any] | None = None
) -> None:
    """Continue the workflow after ``task`` returned ``retval``.

    Sends each link callback with ``retval`` prepended (unless immutable) and the next chain
    step (the *last* element of ``request.chain``, carrying the rest as its own chain), with
    ``parent_id`` = this task and ``root_id`` = its root; their results are added to
    ``request.children``. Then, for a chord header task, returns the part.

    Call it **before** storing the task's result, as Celery does (so ``children`` lists the
    callbacks). To keep Celery's exact order -- callbacks, store, then the chord part --
    pass ``store``, the function that writes this task's SUCCESS meta: it is called (and may
    raise) between the two. Without it the chord part is returned before the caller stores.
    """
    parent_id, root_id = request.id, request.root_id or request.id
    priority = request.priority if app.conf.get("task_inherit_parent_priority") else None
    _guard("link callbacks", _send_callbacks, app, request, retval, parent_id, root_id, priority)
    _guard("next chain step", _send_next_step, app, request, retval, parent_id, root_id,
           priority)
    if store is not None:
        store()
    if request.chord:
        _guard("chord part", chord_part_return, app, request, states.SUCCESS, retval)


def on_failure(
    app: App, task: Task, request: Request, exc: BaseException, traceback_str: str | None
) -> None:
    """Continue the workflow after ``task`` raised ``exc``; call it **after** storing the
    FAILURE (Celery's ``mark_as_failure`` order).

    Returns the chord part (so the body fails with ``ChordError``), stores the same FAILURE
    for every remaining chain step (and returns their chord parts), then runs the errbacks:
    new-style ones (tasks taking ``(request, exc, traceback)``) are called here, old-style
    ones are sent as one group with ``args = [<failed task id>]``.
    """
    if request.chord:
        _guard("chord part", chord_part_return, app, request, states.FAILURE, exc)
    _guard("chain failure", fail_chain, app, request.chain, exc, traceback_str)
    if request.errbacks:
        _guard("errbacks", call_errbacks, app, request, exc, traceback_str)


def on_revoked(app: App, request: Request, exc: BaseException) -> None:
    """A revoked or expired task that was a chord header part fails the chord."""
    if request.chord:
        _guard("chord part", chord_part_return, app, request, states.REVOKED, exc)


def _guard(what: str, fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        logger.exception("Workflow step failed: %s", what)


# -- success ---------------------------------------------------------------------------------
def _continuation_options(parent_id: str | None, root_id: str | None,
                          priority: int | None) -> dict[str, Any]:
    opts: dict[str, Any] = {"parent_id": parent_id, "root_id": root_id, "add_to_parent": False}
    if priority is not None:
        opts["priority"] = priority
    return opts


def _send_callbacks(app: App, request: Request, retval: Any, parent_id: str | None,
                    root_id: str | None, priority: int | None) -> None:
    sigs = [signature(cb, app=app) for cb in request.callbacks or ()]
    opts = _continuation_options(parent_id, root_id, priority)
    if len(sigs) == 1:
        sent = [sigs[0].apply_async((retval,), **opts)]
    else:  # several callbacks go out as one group; group callbacks each as themselves
        sent = [g.apply_async((retval,), **opts) for g in sigs if isinstance(g, group)]
        plain = [s for s in sigs if not isinstance(s, group)]
        if plain:
            sent.append(group(plain, app=app).apply_async((retval,), **opts))
    request.children.extend(r for r in sent if r is not None)


def _send_next_step(app: App, request: Request, retval: Any, parent_id: str | None,
                    root_id: str | None, priority: int | None) -> None:
    if not request.chain:
        return
    steps = list(request.chain)
    step = signature(steps.pop(), app=app)
    sent = step.apply_async((retval,), chain=steps,
                            **_continuation_options(parent_id, root_id, priority))
    if sent is not None:
        request.children.append(sent)


# -- chords ----------------------------------------------------------------------------------
def chord_part_return(app: App, request: Request, state: str, result: Any) -> None:
    """Record this header task's outcome; the worker that completes the chord sends the body
    with the results in group-index order, or fails it if a part failed."""
    backend = app.backend
    if backend is None or not request.group or not request.id or not request.chord:
        return
    body = maybe_signature(request.chord, app=app)
    parent_id, root_id = request.id, request.root_id or request.id

    def dispatch(values: list[Any]) -> None:
        body.apply_async((values,), parent_id=parent_id, root_id=root_id, add_to_parent=False)

    def fail(exc: ChordError) -> None:
        _guard("chord body failure", fail_chord_body, app, body, exc)

    part = ChordPart(request.group, request.id, request.group_index, state, result)
    on_chord_part_return(backend, part, ChordSettings.from_conf(app.conf), dispatch, fail)


def fail_chord_body(app: App, body: Any, exc: BaseException) -> None:
    """Store FAILURE for a chord body that will never run, and call its errbacks
    (Celery's ``chord_error_from_stack``)."""
    if isinstance(body, group):
        _fail_group_body(app, body, exc)
    else:
        body_id = body.id or new_id()
        body.options["task_id"] = body_id
        fake = Request(id=body_id, task=body.name, called_directly=False,
                       errbacks=as_list(body.options.get("link_error")))
        try:
            call_errbacks(app, fake, exc, None)
        except Exception as errback_exc:
            exc = errback_exc
        _store_failure(app, body_id, exc, {})
    fail_chain(app, body.options.get("chain"), exc, None)


def _fail_group_body(app: App, body: Any, exc: BaseException) -> None:
    original = exc.__cause__ if isinstance(exc, ChordError) and exc.__cause__ else exc
    group_errbacks = as_list(body.options.get("link_error"))
    for member in body.tasks:
        sig = maybe_signature(member, app=app)
        if sig.id is None:
            continue
        errbacks = [*as_list(sig.options.get("link_error")), *group_errbacks]
        fake = Request(id=sig.id, task=sig.name, called_directly=False,
                       errbacks=[e for i, e in enumerate(errbacks) if e not in errbacks[:i]])
        _guard("group body errbacks", call_errbacks, app, fake, original, None)
        _store_failure(app, sig.id, original, {"group_id": sig.options.get("group_id")})


def _store_failure(app: App, task_id: str, exc: BaseException, extra: dict[str, Any],
                   traceback_str: str | None = None) -> None:
    backend = app.backend
    if backend is None:
        return
    if traceback_str is None:
        traceback_str = "".join(tb.format_exception(exc))
    backend.store_result(task_id, exc, states.FAILURE, traceback_str, extra=extra)


# -- failure ---------------------------------------------------------------------------------
def fail_chain(app: App, chain: Any, exc: BaseException, traceback_str: str | None) -> None:
    """Store the failure for every remaining step of a chain (and return the chord parts of
    steps that were chord header tasks), so a waiting ``get()`` on the last step raises."""
    backend = app.backend
    pending = deque(as_list(chain))
    while pending:
        sig = maybe_signature(pending.popleft(), app=app)
        opts = sig.options
        tid, body = opts.get("task_id"), opts.get("chord")
        already = bool(body is not None and tid and backend is not None
                       and backend.get_meta(tid).get("status") in states.PROPAGATE_STATES)
        if tid:
            extra = {"group_id": opts.get("group_id"), "parent_id": opts.get("parent_id")}
            _store_failure(app, tid, exc, extra, traceback_str)
        if body is not None and not already:
            part = Request(id=tid, group=opts.get("group_id"), group_index=opts.get("group_index"),
                           chord=body, root_id=opts.get("root_id"), called_directly=False)
            chord_part_return(app, part, states.FAILURE, exc)
        if sig.subtask_type == "chord" and sig.kwargs.get("body") is not None:
            pending.append(sig.kwargs["body"])


def call_errbacks(app: App, request: Request, exc: BaseException,
                  traceback_str: str | None) -> None:
    """Call new-style errbacks here; send old-style ones as one group with the task id."""
    old_style = []
    for raw in request.errbacks or ():
        errback = signature(raw, app=app)
        task = app.tasks.get(errback.name)
        if task is not None and takes_request(task, errback):
            try:
                errback(request, exc, traceback_str)
            except Exception:
                logger.exception("Errback %s raised", errback.name)
        else:
            old_style.append(errback)
    if not old_style:
        return
    root_id = request.root_id or request.id
    errbacks = group(old_style, app=app)
    if app.conf.task_always_eager or request.is_eager:
        errbacks.apply((request.id,), parent_id=request.id, root_id=root_id)
    else:
        errbacks.apply_async((request.id,), parent_id=request.id, root_id=root_id,
                             add_to_parent=False)


def takes_request(task: Task, errback: Any) -> bool:
    """Is ``errback`` new-style, i.e. does its function take ``(request, exc, traceback)``?

    As in Celery: only function tasks qualify (not ``bind=True`` ones, nor Task classes), and
    arguments already stored in a mutable errback count as given.
    """
    fun = getattr(type(task), "__wrapped__", None)  # on the class: the plain function
    if fun is None or getattr(task, "bind", False):
        return False
    target: Any = fun
    if not errback.immutable and (errback.args or errback.kwargs):
        target = functools.partial(fun, *errback.args, **errback.kwargs)
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        params = list(inspect.signature(fun).parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) > 1


# -- built-in tasks --------------------------------------------------------------------------
def _map(self: Task, task: Any, it: Any) -> list[Any]:
    fun = maybe_signature(task, app=self.app).type
    return [fun(item) for item in it]


def _starmap(self: Task, task: Any, it: Any) -> list[Any]:
    fun = maybe_signature(task, app=self.app).type
    return [fun(*item) for item in it]


def _chunks(self: Task, task: Any, it: Any, n: int) -> Any:
    return chunks.apply_chunks(maybe_signature(task, app=self.app), it, n, app=self.app).as_tuple()


def _accumulate(self: Task, *args: Any, **kwargs: Any) -> Any:
    index = kwargs.get("index")
    return args[index] if index is not None else args


def _backend_cleanup(self: Task) -> None:
    """Nothing to do: Redis expires results by itself."""


#: Celery's built-in task names a tq worker must also run.
BUILTINS: dict[str, Callable[..., Any]] = {
    "celery.map": _map,
    "celery.starmap": _starmap,
    "celery.chunks": _chunks,
    "celery.accumulate": _accumulate,
    "celery.backend_cleanup": _backend_cleanup,
}


def register_builtins(app: App) -> None:
    """Register Celery's built-in tasks on ``app`` (those not registered already)."""
    for name, fun in BUILTINS.items():
        if name not in app.tasks:
            app.task(name=name, bind=True)(fun)
