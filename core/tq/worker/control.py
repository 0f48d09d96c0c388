"""Worker-side remote control: a table from command name to a function that calls a Runtime
command, served on Celery's pidbox fanout so ``celery inspect`` / ``celery control``, Flower
and ``tq-console inspect`` all reach the same commands.

``worker_control_allowlist`` narrows the commands a worker accepts; with
``worker_control_key`` set, commands that change anything must carry an HMAC-SHA256 of the
request body in the ``x-tq-signature`` header. Every command is logged; bad payloads are logged
and ignored, never fatal.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import resource
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

from tq.exceptions import ProtocolError, TransportError
from tq.protocol import control as proto
from tq.transport.fanout import Subscription

if TYPE_CHECKING:
    from tq.worker.runtime import Runtime

logger = logging.getLogger(__name__)

#: Commands that only read; everything else changes the worker and may need a signature.
READ_ONLY = frozenset(
    {
        "ping",
        "stats",
        "active",
        "reserved",
        "scheduled",
        "revoked",
        "registered",
        "active_queues",
        "query_task",
        "conf",
        "report",
        "heartbeat",
        "hello",
        "clock",
        "dump_tasks",
        "dump_active",
        "dump_reserved",
        "dump_schedule",
        "dump_revoked",
    }
)
#: Commands that are never answered (Celery sends no reply for these).
NO_REPLY = frozenset({"heartbeat", "shutdown"})
#: How often the control thread reads cluster-wide revokes that arrived in ``tq.revoked``
#: since its last look (seconds). Pub/Sub keeps nothing: a revoke published while the
#: subscription was reconnecting (a broker restart, a CLIENT KILL) reached nobody.
REVOKE_SYNC_S = 2.0

Handler = Callable[["Runtime", dict[str, Any]], Any]


def _ok(text: str) -> dict[str, str]:
    return proto.ok(text)


def _active(rt: Runtime, args: dict[str, Any]) -> Any:
    c = rt._ctl()
    with c.lock:
        reqs = list(c.active.values())
    infos = [r.info(rt.hostname, bool(args.get("safe"))) for r in reqs]
    if infos:  # Celery names the child running each task (pool jobs are keyed by tag)
        pids = {f.job_id: f.pid for f in rt.pool.figures() if f.job_id}
        for req, info in zip(reqs, infos, strict=True):
            info["worker_pid"] = info["worker_pid"] or pids.get(req.tag)
    return infos


def _reserved(rt: Runtime, args: dict[str, Any]) -> Any:
    c = rt._ctl()
    with c.lock:
        reqs = list(c.reserved) + [r for _, b in c.buckets.items() for r in b.waiting]
    # Celery always answers with values here; ``safe`` (S6) asks for the reprs instead
    return [r.info(rt.hostname, bool(args.get("safe"))) for r in reqs]


def _scheduled(rt: Runtime, args: dict[str, Any]) -> Any:
    c = rt._ctl()
    with c.lock:
        entries = list(c.timer)
    return [
        {
            "eta": dt.datetime.fromtimestamp(due, dt.UTC).isoformat(),
            "priority": 6,
            "request": r.info(rt.hostname, bool(args.get("safe"))),
        }
        for due, r in entries
    ]


def _registered(rt: Runtime, args: dict[str, Any]) -> Any:
    items = args.get("taskinfoitems") or []
    out = []
    for name in rt.app.tasks.names():
        task = rt.app.tasks[name]
        extras = [f"{i}={getattr(task, i)}" for i in items if getattr(task, i, None) is not None]
        out.append(f"{name} [{' '.join(extras)}]" if extras else name)
    return out


def _stats(rt: Runtime, args: dict[str, Any]) -> Any:
    from tq.transport.connection import mask_url

    spec = rt.app.transport.spec
    usage = resource.getrusage(resource.RUSAGE_SELF)
    c = rt._ctl()
    return {
        "total": dict(rt.events.tally.total_by_name),
        "pid": os.getpid(),
        "clock": str(rt.events.clock_value()),
        "uptime": int(time.time() - rt.started_at),
        "pool": {
            "implementation": f"tq.worker.pool:{rt.pool.name}",
            "max-concurrency": rt.pool.size(),
            "processes": [f.pid for f in rt.pool.figures()],
            "max-tasks-per-child": rt.options.max_tasks_per_child or "N/A",
            "put-guarded-by-semaphore": False,
            "timeouts": [rt.app.conf.task_soft_time_limit or 0, rt.app.conf.task_time_limit or 0],
            "writes": {"total": rt.events.processed},
        },
        "broker": {
            "hostname": spec.host,
            "userid": None,
            "virtual_host": str(spec.db),
            "port": spec.port or 6379,
            "insist": False,
            "ssl": spec.scheme == "rediss",
            "transport": "redis",
            "connect_timeout": 4,
            "transport_options": dict(rt.app.conf.broker_transport_options or {}),
            "login_method": None,
            "uri_prefix": None,
            "heartbeat": 120.0,
            "failover_strategy": "round-robin",
            "alternates": [],
            "credential_provider": None,
            "url": mask_url(spec.url),
        },
        "prefetch_count": c.prefetch_limit(),
        "rusage": {
            "utime": usage.ru_utime,
            "stime": usage.ru_stime,
            "maxrss": usage.ru_maxrss,
            "minflt": usage.ru_minflt,
            "majflt": usage.ru_majflt,
            "nvcsw": usage.ru_nvcsw,
            "nivcsw": usage.ru_nivcsw,
            "inblock": usage.ru_inblock,
            "oublock": usage.ru_oublock,
        },
    }


def _active_queues(rt: Runtime, args: dict[str, Any]) -> Any:
    default_q = rt.app.conf.task_default_queue
    default_ex = rt.app.conf.task_default_exchange
    out = []
    for q in rt.consuming_queues():
        exchange = default_ex if q == default_q else q
        out.append(
            {
                "name": q,
                "exchange": {
                    "name": exchange,
                    "type": "direct",
                    "arguments": None,
                    "durable": True,
                    "passive": False,
                    "auto_delete": False,
                    "delivery_mode": None,
                    "no_declare": False,
                },
                "routing_key": q,
                "queue_arguments": None,
                "binding_arguments": None,
                "consumer_arguments": None,
                "durable": True,
                "exclusive": False,
                "auto_delete": False,
                "no_ack": False,
                "alias": None,
                "bindings": [],
                "no_declare": None,
                "expires": None,
                "message_ttl": None,
                "max_length": None,
                "max_length_bytes": None,
                "max_priority": None,
            }
        )
    return out


def _query_task(rt: Runtime, args: dict[str, Any]) -> Any:
    ids = args.get("ids") or args.get("task_id") or []
    ids = [ids] if isinstance(ids, str) else list(ids)
    c = rt._ctl()
    out: dict[str, Any] = {}
    with c.lock:
        tables = [
            ("active", list(c.active.values())),
            ("reserved", list(c.reserved)),
            ("scheduled", [r for _, r in c.timer]),
        ]
    for state, reqs in tables:
        for r in reqs:
            if r.id in ids:
                out[r.id] = [state, r.info(rt.hostname, False)]
    return out


def _conf(rt: Runtime, args: dict[str, Any]) -> Any:
    import json

    data = (
        rt.app.conf.masked()
        if args.get("with_defaults")
        else {k: rt.app.conf.masked()[k] for k in rt.app.conf.changes()}
    )
    return {k: (v if _jsonable(v, json) else repr(v)) for k, v in data.items()}


def _jsonable(value: Any, json: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def _revoke(rt: Runtime, args: dict[str, Any]) -> Any:
    ids = args.get("task_id") or []
    ids = [ids] if isinstance(ids, str) else list(ids)
    terminate = bool(args.get("terminate"))
    result = rt.revoke(ids, terminate, args.get("signal") or "SIGTERM")
    if terminate:
        done = result.data or []
        return _ok(f"terminate: {', '.join(done)}" if done else "terminate: tasks unknown")
    return _ok("tasks {" + ", ".join(repr(i) for i in ids) + "} flagged as revoked")


def _rate_limit(rt: Runtime, args: dict[str, Any]) -> Any:
    result = rt.set_rate_limit(str(args.get("task_name")), args.get("rate_limit"))
    if not result.ok:
        return proto.error(result.message)
    if not args.get("rate_limit"):
        return _ok("rate limit disabled successfully")
    return _ok("new rate limit set successfully")


def _limit(value: Any) -> float | None:
    """A time limit from a control request: None, or a number of seconds >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"time limits must be numbers of seconds or null, got {value!r:.40}")
    return float(value)


def _time_limit(rt: Runtime, args: dict[str, Any]) -> Any:
    task = rt.app.tasks.get(str(args.get("task_name")))
    if task is None:
        return proto.error(f"unknown task {args.get('task_name')!r}")
    try:
        soft, hard = _limit(args.get("soft")), _limit(args.get("hard"))
    except ValueError as exc:
        # a bad value stored on the task would break the pool's deadline arithmetic later
        return proto.error(str(exc))
    task.soft_time_limit = soft
    task.time_limit = hard
    return _ok("time limits set successfully")


def _pool_grow(rt: Runtime, args: dict[str, Any]) -> Any:
    rt.grow(int(args.get("n", 1)))
    return _ok("pool will grow")


def _pool_shrink(rt: Runtime, args: dict[str, Any]) -> Any:
    rt.shrink(int(args.get("n", 1)))
    return _ok("pool will shrink")


def _autoscale(rt: Runtime, args: dict[str, Any]) -> Any:
    high, low = int(args.get("max", 0)), int(args.get("min", 0))
    rt.options.autoscale = (high, low)
    return _ok(f"autoscale now max={high} min={low}")


def _events(enabled: bool) -> Handler:
    def handler(rt: Runtime, args: dict[str, Any]) -> Any:
        rt.events.task_events = enabled
        return _ok(f"task events {'enabled' if enabled else 'disabled'}")

    return handler


def _heartbeat(rt: Runtime, args: dict[str, Any]) -> Any:
    rt.events.worker("worker-heartbeat", active=len(rt._ctl().active), freq=5.0)
    return None


def _hello(rt: Runtime, args: dict[str, Any]) -> Any:
    if args.get("from_node") == rt.hostname:
        return None
    now = time.time()
    c = rt._ctl()
    for tid in args.get("revoked") or []:
        c.call(lambda tid=tid: c.revoked.add(tid, now))
    return {"revoked": c.revoked.ids(), "clock": rt.events.clock_value()}


def _shutdown(rt: Runtime, args: dict[str, Any]) -> Any:
    logger.warning("Got shutdown from remote control")
    rt.request_stop()
    return None


HANDLERS: dict[str, Handler] = {
    "ping": lambda rt, a: _ok("pong"),
    "stats": _stats,
    "active": _active,
    "reserved": _reserved,
    "scheduled": _scheduled,
    "revoked": lambda rt, a: rt._ctl().revoked.ids(),
    "registered": _registered,
    "active_queues": _active_queues,
    "query_task": _query_task,
    "conf": _conf,
    "report": lambda rt, a: _ok(f"tq worker {rt.hostname}: {rt.pool.size()} {rt.pool.name}"),
    "clock": lambda rt, a: {"clock": rt.events.clock_value()},
    "revoke": _revoke,
    "terminate": lambda rt, a: _revoke(rt, {**a, "terminate": True}),
    "rate_limit": _rate_limit,
    "time_limit": _time_limit,
    "pool_grow": _pool_grow,
    "pool_shrink": _pool_shrink,
    "autoscale": _autoscale,
    "add_consumer": lambda rt, a: _ok(rt.add_consumer(str(a.get("queue"))).message),
    "cancel_consumer": lambda rt, a: _ok(rt.cancel_consumer(str(a.get("queue"))).message),
    "enable_events": _events(True),
    "disable_events": _events(False),
    "heartbeat": _heartbeat,
    "hello": _hello,
    "shutdown": _shutdown,
}


class RevokeSync:
    """Picks up cluster-wide revokes from ``tq.revoked`` that the pidbox subscription missed.

    ``Control.revoke`` without a destination stores each id scored by its expiry time before
    it publishes. Every ``REVOKE_SYNC_S`` (and at once after the subscription comes back) this
    reads only the entries scored above the highest score seen so far: usually nothing, one
    small command. Ids the worker does not know yet are added to its revoked set, so a task
    held in memory (ETA, reserved, waiting on a rate bucket) is discarded when it comes up.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.high: float | None = None
        self.due = 0.0

    def run(self, force: bool = False) -> int:
        """Returns how many new ids were added (0 when it was not time yet or Redis failed)."""
        mono = time.monotonic()
        if not force and mono < self.due:
            return 0
        self.due = mono + REVOKE_SYNC_S
        transport = self.rt.app.transport
        key = transport.keys.revoked
        try:
            low: float | str = transport.server_time() if self.high is None else f"({self.high}"
            rows = transport.client.zrangebyscore(key, low, "+inf", withscores=True)
        except Exception as exc:  # the subscription loop reports outages; retry next time
            logger.debug("Could not read %s: %s", key, exc)
            return 0
        if self.high is None:
            self.high = float(low)
        if not rows:
            return 0
        self.high = max(self.high, *(float(score) for _, score in rows))
        ids = [raw.decode() if isinstance(raw, bytes) else str(raw) for raw, _ in rows]
        c = self.rt._ctl()

        def add() -> list[str]:
            now = time.time()
            new = [i for i in ids if i not in c.revoked]
            for task_id in new:
                c.revoked.add(task_id, now)
            return new

        new = c.call(add)
        if new:
            logger.info(
                "Revoked %d task id(s) found in %s (not heard on the pidbox)", len(new), key
            )
        return len(new)


class ControlServer:
    """Serves remote-control requests on a thread of its own."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        conf = runtime.app.conf
        self.namespace = str(conf.control_exchange)
        allow = conf.worker_control_allowlist
        self.allow = frozenset(allow) if allow else None
        self.key = conf.worker_control_key
        self.accept = frozenset({"application/json"})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tq-control", daemon=True)
        self._sub = Subscription(
            runtime.app.transport, [(proto.pidbox_exchange(self.namespace), "")]
        )
        self._revokes = RevokeSync(runtime)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(3)
        self._sub.close()

    def _run(self) -> None:
        lost = False
        while not self._stop.is_set():
            try:
                got = self._sub.get(timeout=0.5)
                if lost:
                    logger.warning("Remote control subscription restored")
                    lost = False
                    self._sync_revokes(force=True)
            except TransportError as exc:
                if not lost:
                    logger.error("Remote control subscription lost: %s; retrying", exc)
                    lost = True
                self._stop.wait(1.0)
                continue
            except redis.RedisError as exc:  # NOPERM (an ACL without the pidbox channel) …
                if not lost:
                    logger.error("Remote control subscription refused: %s; retrying", exc)
                    lost = True
                self._sub.close()  # the next get subscribes again
                self._stop.wait(5.0)
                continue
            if got is not None:
                try:
                    self.handle(got[1])
                except Exception:
                    logger.exception("Remote control request failed; ignored")
            self._sync_revokes()

    def _sync_revokes(self, force: bool = False) -> None:
        try:
            self._revokes.run(force)
        except Exception:  # the controller may be stopping; never end the control loop
            logger.debug("revoke sync failed", exc_info=True)

    def handle(self, payload: bytes) -> None:
        try:
            request = proto.parse_request(payload, self.accept)
        except ProtocolError as exc:
            logger.warning("Ignoring an unreadable remote-control message: %s", exc)
            return
        if not request.is_for(self.rt.hostname):
            return
        self.rt.events.adjust_clock(request.clock)
        refusal = self._refusal(request, payload)
        if refusal:
            logger.warning("Refused remote control %r: %s", request.method, refusal)
            reply: Any = proto.error(refusal)
        else:
            logger.info("Remote control: %s %s", request.method, request.arguments or "")
            handler = HANDLERS.get(request.method)
            if handler is None:
                logger.error("Unknown remote control command %r", request.method)
                reply = proto.unknown_command(request.method)
            else:
                try:
                    reply = handler(self.rt, request.arguments)
                except Exception as exc:
                    logger.exception("Remote control %r raised", request.method)
                    reply = proto.error(repr(exc))
        if request.wants_reply and request.method not in NO_REPLY and reply is not None:
            assert request.reply_to is not None and request.ticket is not None
            text = proto.build_reply(
                self.rt.hostname,
                reply,
                request.ticket,
                request.reply_to,
                self.rt.events.clock_value(),
            )
            self.rt.app.transport.publish(
                text,
                request.reply_to.routing_key,
                0,
                request.reply_to.exchange,
                request.reply_to.routing_key,
            )

    def _refusal(self, request: proto.ControlRequest, payload: bytes) -> str | None:
        if self.allow is not None and request.method not in self.allow:
            return f"command {request.method!r} is not allowed on this worker"
        if (
            self.key
            and request.method not in READ_ONLY
            and not proto.is_signed_by(payload, str(self.key))
        ):
            return "command is not signed with this worker's control key"
        return None
