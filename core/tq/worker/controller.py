"""The controller: the worker's main loop.

It receives deliveries from the consumer thread, decodes headers into Requests, sends each to
the timer (ETA), a rate bucket, or the reserved line; hands reserved requests to idle pool
children; acknowledges early (at dispatch) or late (after the outcome); and turns outcomes
into counters, events and, for failures the child could not report (lost child, hard time
limit, terminate), stored results. Every held message stays in ``unacked`` and its lease is
renewed, so a crash loses nothing and a long hold is never restored behind our back.

State is touched by the controller thread only; other threads read it under ``lock`` or ask
for changes through ``call``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal as signal_mod
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from tq import signals, states
from tq.app import workflow
from tq.exceptions import (
    ContentDisallowed,
    NotRegistered,
    ProtocolError,
    TaskRevokedError,
    TimeLimitExceeded,
    WorkerLostError,
)
from tq.protocol.envelope import parse_envelope
from tq.protocol.message import TaskHeaders, decode_task_body
from tq.transport.redis import Delivery
from tq.worker import deadletter
from tq.worker.acker import Acker
from tq.worker.buckets import Buckets
from tq.worker.events import WorkerEvents
from tq.worker.pool import Done, Job, Lost, Pool
from tq.worker.request import DELIVERY_HEADER, Request
from tq.worker.revoked import RevokedSet
from tq.worker.timer import Timer
from tq.worker.trace import ACK_FAILED, build_request

logger = logging.getLogger(__name__)

#: Longest the loop sleeps when nothing is due (seconds).
MAX_TICK_S = 0.5


class Controller:
    """Owns requests, the timer, the buckets and the pool for one worker process."""

    def __init__(self, app: Any, pool: Pool, options: Any, events: WorkerEvents) -> None:
        self.app = app
        self.pool = pool
        self.options = options
        self.events = events
        self.hostname: str = options.hostname
        self.transport = app.transport
        self.backend = app.backend
        self.lock = threading.RLock()
        self.reserved: deque[Request] = deque()
        #: Running requests by delivery tag (a task id may run twice at once: a retry sent
        #: with no delay can start before the first execution has reported).
        self.active: dict[str, Request] = {}
        self.timer: Timer[Request] = Timer()
        self.buckets = Buckets()
        self.revoked = RevokedSet(app.conf.worker_revoked_max, app.conf.worker_revoked_expires)
        self.recent: deque[Any] = deque(maxlen=200)
        self.credit_event = CreditEvent()
        self._inbox: deque[Delivery] = deque()
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._acks: list[str] = []
        self._results: list[tuple[str, str]] = []
        self._poller = _Poller()
        self.acker = Acker(self.transport, self.backend)
        self.acker.start()
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self.accept = app.accept_content
        self.max_size = int(app.conf.broker_max_message_size)
        self.delivery_limit = int(app.conf.worker_delivery_limit)
        self.eta_limit = int(app.conf.worker_eta_task_limit or 0)
        self.stopping = False
        self.dispatching = True
        self._on_tick: list[Callable[[float], None]] = []
        for name, task in app.tasks.items():
            rate = app.annotations_for(name).get("rate_limit", getattr(task, "rate_limit", None))
            rate = rate or app.conf.task_default_rate_limit
            if rate and not app.conf.worker_disable_rate_limits:
                self.buckets.set_rate(name, rate, time.monotonic())

    # -- cross-thread entry points ------------------------------------------------------------
    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wfd, b"x")

    def deliver(self, batch: list[Delivery]) -> None:
        """Called by the consumer thread."""
        self._inbox.extend(batch)
        self.wake()

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run ``fn`` on the controller thread and return its result."""
        if threading.current_thread() is self._thread:
            return fn()
        fut: Future[Any] = Future()
        self._calls.append((fn, fut))
        self.wake()
        return fut.result(timeout)

    def prefetch_limit(self) -> int:
        mult = int(self.app.conf.worker_prefetch_multiplier)
        return self.pool.size() * mult if mult > 0 else 10_000

    def held(self) -> int:
        return (
            len(self.reserved) + len(self.active) + len(self._inbox) + self.buckets.waiting_count()
        )

    def credit(self) -> int:
        if self.stopping:
            return 0
        if self.eta_limit and len(self.timer) >= self.eta_limit:
            return 0
        return max(self.prefetch_limit() - self.held(), 0)

    def on_tick(self, fn: Callable[[float], None]) -> None:
        self._on_tick.append(fn)

    # -- the loop -----------------------------------------------------------------------------
    _thread: threading.Thread | None = None

    def run_forever(self, until: Callable[[], bool]) -> None:
        self._thread = threading.current_thread()
        while not until():
            try:
                self.step(self._timeout())
            except Exception:
                # The loop is the worker: log, pause briefly (no tight error loop), go on.
                logger.exception("Controller step failed; the worker keeps running")
                time.sleep(0.1)

    def _timeout(self) -> float:
        if self._inbox or self._calls or (self.reserved and self.pool.idle()):
            return 0.0
        now = time.time()
        t = MAX_TICK_S
        due = self.timer.next_due()
        if due is not None:
            t = min(t, max(due - now, 0.0))
        bucket_wait = self.buckets.next_ready(time.monotonic())
        if bucket_wait is not None:
            t = min(t, bucket_wait)
        limit = getattr(self.pool, "next_deadline", lambda: None)()
        if limit is not None:
            t = min(t, max(limit, 0.0))
        return t

    def step(self, timeout: float) -> None:
        ready = self._poller.wait([self._rfd, *self.pool.waitables()], timeout)
        if self._rfd in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._rfd, 65536)
        for outcome in self.pool.collect(ready) + self.pool.check(time.time()):
            self._safely(self._on_outcome, outcome)
        while self._calls:
            fn, fut = self._calls.popleft()
            try:
                fut.set_result(fn())
            except Exception as exc:
                fut.set_exception(exc)
        self._take_inbox()
        now = time.time()
        with self.lock:
            for req in self.timer.pop_due(now):
                self._make_ready(req)
            for req in self.buckets.release(time.monotonic()):
                self.reserved.append(req)
        self._dispatch()
        self.flush()
        for fn in self._on_tick:
            self._safely(fn, now)
        event = self.credit_event
        if not event.is_set() and self.credit() >= event.wanted:
            event.set()

    def _take_inbox(self) -> None:
        while self._inbox:
            delivery = self._inbox.popleft()
            try:
                self._on_delivery(delivery)
            except Exception as exc:
                logger.exception("Could not handle delivery %s; dead-lettering it", delivery.tag)
                self._safely(
                    self._dead,
                    delivery.tag,
                    delivery.queue,
                    delivery.raw,
                    f"worker error while receiving: {exc!r}",
                )

    def _safely(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            logger.exception("Controller error in %s; the worker keeps running", fn.__name__)

    def flush(self) -> None:
        """Hand this step's results and acks to the acker thread (one hand-off) and publish
        queued events."""
        if self._acks or self._results:
            acks, self._acks = self._acks, []
            results, self._results = self._results, []
            self.acker.submit(results, acks)
        self.events.flush()

    # -- receiving ----------------------------------------------------------------------------
    def _on_delivery(self, delivery: Delivery) -> None:
        if delivery.is_dead:
            self.events.tally.dead_lettered += 1
            entry = delivery.raw.decode()
            self.events.note("dead-letter", f"{entry}: unusable envelope from {delivery.queue}")
            logger.error("Dead-lettered an unusable envelope from %r as %s", delivery.queue, entry)
            return
        try:
            envelope = parse_envelope(delivery.raw, self.max_size)
            headers = TaskHeaders.parse(envelope.headers)
            if envelope.content_type not in self.accept:
                raise ContentDisallowed(
                    f"Refusing to deserialize untrusted content of type {envelope.content_type}"
                )
        except ProtocolError as exc:
            self._dead(delivery.tag, delivery.queue, delivery.raw, str(exc))
            return
        req = Request(delivery.tag, delivery.queue, delivery.raw, envelope, headers, time.time())
        task = self.app.tasks.get(headers.task)
        if task is None:
            self._unknown(req)
            return
        self._resolve(req, task)
        with self.lock:
            self.events.tally.received += 1
        signals.task_received.send(sender=self, request=req)
        self.events.task(
            "task-received",
            req.id,
            req.name,
            req.args_repr(),
            name=req.name,
            args=req.args_repr(),
            kwargs=req.kwargs_repr(),
            root_id=headers.root_id,
            parent_id=headers.parent_id,
            retries=headers.retries,
            eta=headers.raw.get("eta"),
            expires=headers.raw.get("expires"),
        )
        if self._discard_if_revoked(req):
            return
        eta = req.eta
        with self.lock:
            if eta is not None and eta > time.time():
                self.timer.push(eta, req)
            else:
                self._make_ready(req)

    def _resolve(self, req: Request, task: Any) -> None:
        req.task = task
        req.acks_late = bool(task.option("acks_late"))
        req.reject_on_worker_lost = bool(task.option("reject_on_worker_lost"))
        req.acks_on_failure_or_timeout = bool(task.option("acks_on_failure_or_timeout", True))
        hdr = req.headers
        req.time_limit = hdr.time_limit if hdr.time_limit is not None else task.option("time_limit")
        req.soft_time_limit = (
            hdr.soft_time_limit
            if hdr.soft_time_limit is not None
            else task.option("soft_time_limit")
        )

    def _unknown(self, req: Request) -> None:
        logger.error("Received unregistered task of type %r (id %s)", req.name, req.id)
        signals.task_unknown.send(sender=self, name=req.name, id=req.id, message=None, exc=None)
        self._store(req.id, NotRegistered(req.name), states.FAILURE)
        self.events.task(
            "task-failed",
            req.id,
            req.name,
            "not registered",
            exception=f"NotRegistered({req.name!r})",
        )
        self._dead(req.tag, req.queue, req.raw, f"unregistered task {req.name!r}", req.id, req.name)

    def _dead(
        self,
        tag: str,
        queue: str,
        raw: bytes,
        reason: str,
        task_id: str | None = None,
        name: str | None = None,
    ) -> None:
        deadletter.record(self.transport, reason, queue, raw, task_id, name)
        self.events.tally.dead_lettered += 1
        self.events.note("dead-letter", reason, task_id, name)
        self._acks.append(tag)

    def _make_ready(self, req: Request) -> None:
        bucket = self.buckets.get(req.name)
        if bucket is not None and (bucket.waiting or not bucket.take(time.monotonic())):
            bucket.waiting.append(req)
        else:
            self.reserved.append(req)

    def _discard_if_revoked(self, req: Request) -> bool:
        now = time.time()
        expired = req.is_expired(now)
        if not expired and req.id not in self.revoked:
            return False
        reason = "expired" if expired else "revoked"
        logger.info("Discarding %s task %s[%s]", reason, req.name, req.id)
        if expired:
            self.revoked.add(req.id, now)
        exc = TaskRevokedError(reason)
        self._store(req.id, exc, states.REVOKED)
        self._safely(self._revoked_chord_part, req, exc)
        self.events.task(
            "task-revoked", req.id, req.name, reason, terminated=False, signum=None, expired=expired
        )
        signals.task_revoked.send(
            sender=req.task, request=req, terminated=False, signum=None, expired=expired
        )
        self.events.tally.revoked += 1
        self._acks.append(req.tag)
        return True

    def _revoked_chord_part(self, req: Request, exc: BaseException) -> None:
        """A chord header part that is discarded still counts for its chord (which then
        fails with the revoke, as in Celery): without this the chord's body never runs and
        its counter waits for ever. The body is decoded only here, on this rare path."""
        if req.task is None:
            return
        args, kwargs, embed = decode_task_body(req.envelope, self.accept, self.max_size)
        if not embed.get("chord"):
            return
        request = build_request(req.payload(), args, kwargs, embed, self.hostname)
        workflow.on_revoked(self.app, request, exc)

    # -- dispatching --------------------------------------------------------------------------
    def _dispatch(self) -> None:
        while self.dispatching and not self.stopping and self.reserved and self.pool.idle() > 0:
            with self.lock:
                req = self.reserved.popleft()
                if self._discard_if_revoked(req):
                    continue
                req.state = states.STARTED
                req.started_at = time.time()
                # An early ack is written by whoever runs the job, before the task body
                # starts (trace.run_job). Handed to the acker thread instead, a job could
                # start before its ack went out, and a worker killed in that window would
                # leave a message that had already run in ``unacked``, to run again.
                req.acknowledged = not req.acks_late
                self.active[req.tag] = req
            self.events.task("task-started", req.id, req.name, "")
            self.pool.submit(
                Job(
                    req.tag,
                    # With a backlog, small results come back to be written in batches;
                    # otherwise the child stores its result at once (one hop, not three).
                    req.payload(ack_first=req.acknowledged, defer=bool(self.reserved)),
                    req.name,
                    req.soft_time_limit,
                    req.time_limit,
                )
            )

    # -- outcomes -----------------------------------------------------------------------------
    def _on_outcome(self, outcome: Done | Lost) -> None:
        with self.lock:
            req = self.active.pop(outcome.job_id, None)
        if req is None:
            return
        req.worker_pid = outcome.pid
        req.extra["finished_at"] = time.time()
        if isinstance(outcome, Lost):
            self._on_lost(req, outcome)
        else:
            self._on_done(req, outcome.value)
        self.events.processed += 1
        self.events.tally.finished(req.name, req.state, req.extra.get("runtime"))
        with self.lock:
            self.recent.append(req)

    def _on_done(self, req: Request, value: tuple[Any, ...]) -> None:
        kind = value[0]
        if kind == ACK_FAILED:  # the runner could not ack first: retry it in the background
            self._acks.append(value[1])
            value = value[2]
            kind = value[0]
        req.state = kind
        tally = self.events.tally
        if kind == "SUCCESS":
            tally.succeeded += 1
            tally.tick(time.time(), "done")
            req.extra.update(result=value[1], runtime=value[2])
            if len(value) > 3 and value[3]:
                self._results.append((req.id, value[3]))
            self.events.task(
                "task-succeeded", req.id, req.name, value[1], result=value[1], runtime=value[2]
            )
        elif kind in ("FAILURE", "error"):
            self._failed(req, value)
        elif kind == "RETRY":
            tally.retried += 1
            req.extra.update(exception=value[1], traceback=value[2])
            self.events.task(
                "task-retried", req.id, req.name, value[1], exception=value[1], traceback=value[2]
            )
        elif kind == "REJECTED":
            self._rejected(req, bool(value[1]), str(value[2]))
            return
        elif kind == "INVALID":
            self._dead(req.tag, req.queue, req.raw, str(value[1]), req.id, req.name)
            return
        elif kind == "UNKNOWN":
            self._unknown(req)
            return
        if req.acks_late:
            self._acks.append(req.tag)

    def _failed(self, req: Request, value: tuple[Any, ...]) -> None:
        tally = self.events.tally
        tally.failed += 1
        tally.tick(time.time(), "failed")
        exc_repr = str(value[1])
        trace = value[2] if len(value) > 2 else None
        req.state = states.FAILURE
        req.extra.update(exception=exc_repr, traceback=trace)
        if value[0] == "error":  # the pool reported instead of the task's trace
            self._store(req.id, WorkerLostError(exc_repr), states.FAILURE)
        elif len(value) > 5 and value[5]:  # the child could not store it: write it from here
            self._results.append((req.id, value[5]))
        self.events.task(
            "task-failed", req.id, req.name, exc_repr, exception=exc_repr, traceback=trace
        )
        if req.acks_late and not req.acks_on_failure_or_timeout:
            self._dead(req.tag, req.queue, req.raw, f"failed: {exc_repr}", req.id, req.name)

    def _rejected(self, req: Request, requeue: bool, reason: str) -> None:
        self.events.tally.rejected += 1
        self.events.task("task-rejected", req.id, req.name, reason, requeue=requeue)
        if req.acknowledged:
            return  # early-acked: reject has no effect (as in Celery)
        if requeue:
            self.transport.requeue(req.tag, front=False)
        else:
            self._dead(req.tag, req.queue, req.raw, f"rejected by task: {reason}", req.id, req.name)

    def _on_lost(self, req: Request, lost: Lost) -> None:
        signum = lost.signum
        if lost.reason == "terminated":
            req.state = states.REVOKED
            self._store(req.id, TaskRevokedError("terminated"), states.REVOKED)
            self.events.tally.revoked += 1
            self.events.task(
                "task-revoked",
                req.id,
                req.name,
                "terminated",
                terminated=True,
                signum=signum,
                expired=False,
            )
            signals.task_revoked.send(
                sender=req.task, request=req, terminated=True, signum=signum, expired=False
            )
        elif lost.reason == "timeout":
            exc = TimeLimitExceeded(req.time_limit)
            self._failed(req, ("FAILURE", repr(exc), None))
            self._store(req.id, exc, states.FAILURE)
            if req.acks_late and not req.acks_on_failure_or_timeout:
                return
        elif req.acks_late and req.reject_on_worker_lost:
            self._requeue_lost(req, lost)
            return
        else:
            name = signal_mod.Signals(signum).name if signum else f"exit code {lost.exitcode}"
            exc = WorkerLostError(f"Worker exited prematurely: {name} Job: {req.id}.")
            self._failed(req, ("FAILURE", repr(exc), None))
            self._store(req.id, exc, states.FAILURE)
        # Early ack: the runner acks before the task starts, but it may have died before
        # that; the FAILURE is stored, so make sure the message is gone (acking twice is safe).
        self._acks.append(req.tag)

    def _requeue_lost(self, req: Request, lost: Lost) -> None:
        deliveries = req.deliveries + 1
        if deliveries >= self.delivery_limit:
            reason = (
                f"worker lost {deliveries} times running it (delivery limit {self.delivery_limit})"
            )
            self._store(req.id, WorkerLostError(reason), states.FAILURE)
            self._dead(req.tag, req.queue, req.raw, reason, req.id, req.name)
            return

        def bump(envelope: dict[str, Any]) -> dict[str, Any]:
            envelope.setdefault("headers", {})[DELIVERY_HEADER] = deliveries
            return envelope

        logger.warning(
            "Worker lost running %s[%s]; requeued (delivery %d of %d)",
            req.name,
            req.id,
            deliveries,
            self.delivery_limit,
        )
        self.transport.requeue(req.tag, front=True, rewrite=bump)

    def _store(self, task_id: str, exc: BaseException, state: str) -> None:
        if self.backend is None:
            return
        try:
            self.backend.store_result(task_id, exc, state)
        except Exception:
            logger.exception("Could not store %s for %s", state, task_id)

    # -- commands (run on the controller thread) ----------------------------------------------
    def revoke(self, task_ids: list[str], terminate: bool, signum: int) -> list[str]:
        now = time.time()
        terminated: list[str] = []
        for task_id in task_ids:
            self.revoked.add(task_id, now)
            if not terminate:
                continue
            for tag, req in list(self.active.items()):
                if req.id == task_id and self.pool.terminate_job(tag, signum):
                    terminated.append(task_id)
        return terminated

    def set_rate(self, task_name: str, rate: str | float | None) -> None:
        """Change a task type's rate limit. When the limit is removed, the requests that
        were waiting on its bucket become ready instead of being dropped from memory."""
        with self.lock:
            old = self.buckets.get(task_name)
            if self.buckets.set_rate(task_name, rate, time.monotonic()) is None and old:
                self.reserved.extend(old.waiting)
                old.waiting.clear()

    def is_active(self, task_id: str) -> bool:
        with self.lock:
            return any(r.id == task_id for r in self.active.values())

    def held_tags(self) -> list[str]:
        """Tags this worker holds unacked (reserved, ETA, waiting on a bucket, late active)."""
        with self.lock:
            tags = [r.tag for r in self.reserved]
            tags += [r.tag for _, r in self.timer]
            tags += [r.tag for _, b in self.buckets.items() for r in b.waiting]
            tags += [r.tag for r in self.active.values() if not r.acknowledged]
        return tags

    def release_unstarted(self) -> int:
        """Give back every held message that has not started (warm shutdown, restore order).

        Deliveries the consumer handed over but the loop has not read yet are taken in first:
        they are in ``unacked`` like the rest (a solo pool, busy running a task, leaves many
        there), and would otherwise be left for the visibility timeout."""
        self._take_inbox()
        with self.lock:
            held = list(self.reserved) + [r for _, r in self.timer] + self.buckets.drain()
            self.reserved.clear()
            self.timer.drain()
        held.sort(key=lambda r: r.received_at)
        self.flush()
        restored = 0
        for req in held:
            try:
                if self.transport.requeue(req.tag, front=True):
                    restored += 1
            except Exception:
                logger.exception("Could not restore %s; it stays in unacked", req.tag)
        return restored

    def close(self) -> None:
        self.acker.stop()
        for fd in (self._rfd, self._wfd):
            with contextlib.suppress(OSError):
                os.close(fd)


class CreditEvent(threading.Event):
    """Set by the controller when prefetch credit is available. ``wanted`` is how much credit
    the waiting consumer asked for: it pops in batches under load, so waking it for every
    single free slot would only make it go back to sleep (a thread hand-off per task)."""

    wanted = 1


class _Poller:
    """``multiprocessing.connection.wait`` without building a selector on every call: one
    ``poll`` object whose registrations follow the waitables (file descriptors, or objects
    with ``fileno()``; the pool's set changes when children come and go)."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self._by_fd: dict[int, Any] = {}

    def wait(self, waitables: list[Any], timeout: float) -> list[Any]:
        by_fd = {w if isinstance(w, int) else w.fileno(): w for w in waitables}
        if by_fd.keys() != self._by_fd.keys():
            for fd in self._by_fd.keys() - by_fd.keys():
                with contextlib.suppress(KeyError, ValueError):
                    self._poll.unregister(fd)
            for fd in by_fd.keys() - self._by_fd.keys():
                self._poll.register(fd, select.POLLIN)
        self._by_fd = by_fd
        try:
            events = self._poll.poll(max(timeout, 0.0) * 1000.0)
        except InterruptedError:
            return []
        return [by_fd[fd] for fd, _ in events if fd in by_fd]
