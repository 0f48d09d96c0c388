"""Runs in the pool child: find the task, set its context, call it, handle Retry / Reject /
Ignore / failure, store the result, and continue the workflow (callbacks, errbacks, chain,
chord). Returns a small summary tuple to the controller; the result itself goes to Redis.

Summaries (first element is the outcome):
    ("SUCCESS", result_repr, runtime)
    ("FAILURE", exception_repr, traceback, runtime, exception_type, unstored_meta)
    ("RETRY", exception_repr, traceback, runtime)
    ("REJECTED", requeue, reason_repr, runtime)
    ("IGNORED", runtime)
    ("INVALID", reason)          body not decodable / not accepted: the controller dead-letters
    ("UNKNOWN", task_name)       not registered in this process
    (ACK_FAILED, tag, summary)   the early ack could not be written first (see run_job)
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback as tb
from dataclasses import dataclass
from typing import Any

from tq import faults, signals, states
from tq.app import context
from tq.backend.meta import build_meta, dumps_meta
from tq.exceptions import Ignore, ProtocolError, Reject, Retry, TransportError
from tq.protocol.envelope import Envelope
from tq.protocol.message import decode_task_body, safe_repr
from tq.transport.direct import DirectAck

logger = logging.getLogger(__name__)

#: First element of a summary whose early ack failed (the controller retries the ack).
ACK_FAILED = "ACK_FAILED"
#: Longest ``result_repr`` sent back to the controller (events, console).
SUMMARY_REPR_MAX = 256
#: Longest traceback text sent back to the controller (kept in memory for the console and
#: put in task events); the stored result keeps the whole traceback. Its tail is kept: the
#: innermost frames and the exception line.
SUMMARY_TRACE_MAX = 16_384


def _clip_trace(trace: str | None) -> str | None:
    if trace is None or len(trace) <= SUMMARY_TRACE_MAX:
        return trace
    cut = len(trace) - SUMMARY_TRACE_MAX
    return f"[{cut} characters cut]\n" + trace[cut:]


@dataclass(slots=True)
class ChildContext:
    """What every job in this process shares (built once per child)."""

    app: Any
    hostname: str
    accept: frozenset[str]
    max_size: int
    pid: int
    #: Small SUCCESS results are handed back to the controller, which writes them in batches
    #: (one round trip for many); 0 stores every result from the child directly.
    defer_limit: int = 0
    #: Sends the early ack before a task starts (a connection held by this process).
    ack: Any = None
    #: Whether the current job's small SUCCESS result goes back to the controller (it has a
    #: backlog, so results are batched) or is stored here at once (lower latency when idle).
    defer_now: bool = True


def child_init(app: Any, hostname: str, defer_limit: int = 0) -> ChildContext:
    """Pool initializer: reset inherited connections, send ``worker_process_init``."""
    app._check_fork()
    context.set_current_app(app)
    signals.worker_process_init.send(sender=None)
    return ChildContext(
        app=app,
        hostname=hostname or f"celery@{socket.gethostname()}",
        accept=app.accept_content,
        max_size=int(app.conf.broker_max_message_size),
        pid=os.getpid(),
        defer_limit=defer_limit,
        ack=DirectAck(app.transport),
    )


def build_request(
    payload: tuple[Any, ...],
    args: list[Any],
    kwargs: dict[str, Any],
    embed: dict[str, Any],
    hostname: str,
) -> context.Request:
    (task_id, name, headers, _body, _ctype, _cenc, delivery_info, properties) = payload[:8]
    timelimit = headers.get("timelimit") or (None, None)
    return context.Request(
        id=task_id,
        task=name,
        args=args,
        kwargs=kwargs,
        retries=int(headers.get("retries") or 0),
        is_eager=False,
        called_directly=False,
        eta=headers.get("eta"),
        expires=headers.get("expires"),
        root_id=headers.get("root_id") or task_id,
        parent_id=headers.get("parent_id"),
        group=headers.get("group"),
        group_index=headers.get("group_index"),
        chord=embed.get("chord"),
        callbacks=embed.get("callbacks"),
        errbacks=embed.get("errbacks"),
        chain=embed.get("chain"),
        timelimit=(timelimit[0], timelimit[1]) if len(timelimit) == 2 else (None, None),
        delivery_info={**delivery_info, "priority": properties.get("priority", 0)},
        hostname=hostname,
        origin=headers.get("origin"),
        reply_to=properties.get("reply_to"),
        correlation_id=properties.get("correlation_id"),
        ignore_result=bool(headers.get("ignore_result", False)),
        headers=headers,
        shadow=headers.get("shadow"),
        priority=properties.get("priority"),
        argsrepr=headers.get("argsrepr"),
        kwargsrepr=headers.get("kwargsrepr"),
    )


def run_job(ctx: ChildContext, payload: tuple[Any, ...]) -> tuple[Any, ...]:
    """Pool target: run one task message and return its summary.

    When the payload carries a delivery tag to acknowledge first (early ack), the ack is
    written before anything else, so a task never starts while its message could still be
    restored. If Redis refuses it, the task runs anyway (as Celery's would) and the summary
    is wrapped as ``(ACK_FAILED, tag, summary)`` for the controller to retry the ack."""
    ack_tag = payload[8]
    ctx.defer_now = bool(payload[9])
    if ack_tag is not None:
        try:
            faults.hit("before_ack")
            ctx.ack(ack_tag)
        except TransportError as exc:
            logger.warning("Could not acknowledge %s before running it: %s", payload[0], exc)
            return (ACK_FAILED, ack_tag, _run(ctx, payload))
    return _run(ctx, payload)


def _run(ctx: ChildContext, payload: tuple[Any, ...]) -> tuple[Any, ...]:
    _task_id, name, headers, body, ctype, cenc, _delivery, _props, _ack, _defer = payload
    envelope = Envelope(body, ctype, cenc, headers, {})
    try:
        args, kwargs, embed = decode_task_body(envelope, ctx.accept, ctx.max_size)
    except ProtocolError as exc:
        return ("INVALID", str(exc))
    task = ctx.app.tasks.get(name)
    if task is None:
        return ("UNKNOWN", name)
    request = build_request(payload, args, kwargs, embed, ctx.hostname)
    return execute(ctx, task, request)


def _extended(ctx: ChildContext, task: Any, request: context.Request) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if request.group:
        extra["group_id"] = request.group
    if request.parent_id:
        extra["parent_id"] = request.parent_id
    if ctx.app.conf.result_extended:
        extra.update(
            name=task.name,
            args=request.args,
            kwargs=request.kwargs,
            worker=ctx.hostname,
            retries=request.retries,
            queue=(request.delivery_info or {}).get("routing_key"),
        )
    return extra


def _store(
    ctx: ChildContext,
    task: Any,
    request: context.Request,
    value: Any,
    state: str,
    traceback: str | None = None,
) -> str | None:
    """Store the result; returns the meta text instead when the controller should write it."""
    backend = ctx.app.backend
    if backend is None:
        return None
    is_error = state in (states.FAILURE, states.RETRY)
    ignored = request.ignore_result or bool(task.option("ignore_result"))
    if ignored and not (is_error and task.option("store_errors_even_if_ignored")):
        return None
    limit = ctx.app.conf.result_traceback_limit
    if traceback and limit is not None:
        traceback = traceback[-int(limit) :] if int(limit) > 0 else None
    children = [c.as_tuple() for c in request.children]
    if ctx.defer_limit and state == states.SUCCESS:
        meta = build_meta(request.id, state, value, None, children, _extended(ctx, task, request))
        text = dumps_meta(meta)
        if len(text) <= ctx.defer_limit:
            if ctx.defer_now:
                return text
            try:  # idle controller: store now, on the backend's held connection
                backend.store_many([(request.id, text)])
            except Exception as exc:
                # Hand it to the controller's writer, which retries until it goes through
                # (and sends a late ack only after it): a result is never dropped here.
                logger.warning("Could not store the result of %s[%s] (%s); retrying it in "
                               "the worker", task.name, request.id, exc)
                return text
            return None
    extended = _extended(ctx, task, request)
    try:
        backend.store_result(request.id, value, state, traceback, children, extended)
    except Exception as exc:
        # The controller's writer retries it until it goes through (a late ack waits for
        # it), so an outage or a full broker never loses a stored outcome.
        logger.warning(
            "Could not store the %s result of %s[%s] (%s); retrying it in the worker",
            state,
            task.name,
            request.id,
            exc,
        )
        return dumps_meta(build_meta(request.id, state, value, traceback, children, extended))
    return None


def _workflow(kind: str, *args: Any) -> None:
    try:
        from tq.app import workflow
    except ImportError:  # canvas continuation not available in this build
        return
    try:
        getattr(workflow, kind)(*args)
    except Exception:
        logger.exception("Workflow step %s failed", kind)


def execute(ctx: ChildContext, task: Any, request: context.Request) -> tuple[Any, ...]:
    """Run ``task`` for ``request`` with all of Celery's semantics."""
    token = context.push_task(task, request)
    start = time.perf_counter()
    signals.task_prerun.send(
        sender=task, task_id=request.id, task=task, args=request.args, kwargs=request.kwargs
    )
    state = states.FAILURE
    retval: Any = None
    try:
        if task.option("track_started") and ctx.app.backend is not None:
            _store(ctx, task, request, {"pid": ctx.pid, "hostname": ctx.hostname}, states.STARTED)
        try:
            retval = task.run(*request.args, **request.kwargs)
        except Exception as exc:
            retry = _autoretry(task, exc)
            if retry is None:
                raise
            raise retry from exc
        state = states.SUCCESS
        _workflow("on_success", ctx.app, task, request, retval)
        deferred = _store(ctx, task, request, retval, states.SUCCESS)
        runtime = time.perf_counter() - start
        _hook(task.on_success, retval, request.id, request.args, request.kwargs)
        signals.task_success.send(sender=task, result=retval, runtime=runtime)
        return ("SUCCESS", safe_repr(retval, SUMMARY_REPR_MAX), runtime, deferred)
    except Retry as exc:
        state = states.RETRY
        return _on_retry(ctx, task, request, exc, start)
    except Ignore:
        state = states.IGNORED
        return ("IGNORED", time.perf_counter() - start)
    except Reject as exc:
        state = states.REJECTED
        signals.task_rejected.send(sender=None, message=None, exc=exc)
        return ("REJECTED", bool(exc.requeue), safe_repr(exc.reason), time.perf_counter() - start)
    except (Exception, SystemExit) as exc:  # a task's error never kills the child
        retval = exc
        return _on_failure(ctx, task, request, exc, start)
    finally:
        _hook(task.after_return, state, retval, request.id, request.args, request.kwargs, None)
        signals.task_postrun.send(
            sender=task,
            task_id=request.id,
            task=task,
            args=request.args,
            kwargs=request.kwargs,
            retval=retval,
            state=state,
        )
        context.pop_task(token)


def _autoretry(task: Any, exc: Exception) -> Retry | BaseException | None:
    """``autoretry_for``: the Retry (or final error) to raise instead of ``exc``, or None."""
    kinds = tuple(task.autoretry_for or ())
    if not kinds or not isinstance(exc, kinds):
        return None
    if task.dont_autoretry_for and isinstance(exc, tuple(task.dont_autoretry_for)):
        return None
    opts = dict(task.retry_kwargs or {})
    if task.retry_backoff and "countdown" not in opts:
        opts["countdown"] = task.backoff_countdown(task.request.retries)
    try:
        task.retry(exc=exc, **opts)
    except Retry as retry:
        return retry
    except BaseException as final:  # max retries used up: the original error (or Max…)
        return final
    return None


def _on_retry(
    ctx: ChildContext, task: Any, request: context.Request, exc: Retry, start: float
) -> tuple[Any, ...]:
    reason = exc.exc if exc.exc is not None else exc
    trace = "".join(tb.format_exception(reason)) if exc.exc is not None else None
    request.children.append(ctx.app.AsyncResult(request.id))
    _store(ctx, task, request, reason, states.RETRY, trace)
    _hook(task.on_retry, reason, request.id, request.args, request.kwargs, None)
    signals.task_retry.send(sender=task, request=request, reason=reason, einfo=None)
    return ("RETRY", safe_repr(reason), _clip_trace(trace), time.perf_counter() - start)


def _on_failure(
    ctx: ChildContext, task: Any, request: context.Request, exc: BaseException, start: float
) -> tuple[Any, ...]:
    trace = "".join(tb.format_exception(exc))
    unstored = _store(ctx, task, request, exc, states.FAILURE, trace)
    _workflow("on_failure", ctx.app, task, request, exc, trace)
    _hook(task.on_failure, exc, request.id, request.args, request.kwargs, None)
    signals.task_failure.send(
        sender=task,
        task_id=request.id,
        exception=exc,
        args=request.args,
        kwargs=request.kwargs,
        traceback=exc.__traceback__,
        einfo=None,
    )
    expected = task.throws and isinstance(exc, tuple(task.throws))
    if not expected:
        logger.error("Task %s[%s] raised unexpected: %s", task.name, request.id, safe_repr(exc))
    return (
        "FAILURE",
        safe_repr(exc),
        _clip_trace(trace),
        time.perf_counter() - start,
        type(exc).__name__,
        unstored,
    )


def _hook(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        logger.exception("Task hook %s raised", getattr(fn, "__name__", fn))
