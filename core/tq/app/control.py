"""The remote-control client: broadcast a command to workers and collect their replies.

Owns the client side of wire spec 5.2 / 11.4, which Celery and tq workers both answer: declare
a reply queue with its binding member, ``PUBLISH /<db>.celery.pidbox <request>``, ``BRPOP`` the
replies until ``limit`` or ``timeout`` (a total deadline), keep those whose ticket matches, then
delete the queue (the Redis steps live in ``tq.app._pidbox``). Every call uses a fresh oid, so
concurrent calls never see each other's replies. ``revoke`` also records the ids in
``tq.revoked`` (a ZSET scored by expiry) so a tq worker that was offline still honours it;
Celery ignores that key.

May import protocol and transport; never worker, beat or console.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tq.app._pidbox import Reply, ReplyQueue, call, new_oid
from tq.protocol.control import (
    ControlRequest,
    ReplyTo,
    build_request,
    match_node,
    merge_replies,
    pidbox_exchange,
    sign_request,
)
from tq.protocol.events import LamportClock
from tq.protocol.serializers import JSON
from tq.transport import fanout

if TYPE_CHECKING:
    from tq.app.base import App
    from tq.transport.redis import RedisTransport

logger = logging.getLogger(__name__)

#: Default seconds an offline-proof revoke stays in ``tq.revoked`` (``worker_revoked_expires``).
DEFAULT_REVOKE_EXPIRES_S = 10_800.0

Destination = str | Sequence[str] | None


def _ids(task_id: str | Iterable[str]) -> list[str]:
    return [task_id] if isinstance(task_id, str) else [str(t) for t in task_id]


def _queue_names(conf: Any) -> list[str]:
    names = [str(conf.task_default_queue)]
    queues = conf.task_queues or ()
    items = queues.values() if isinstance(queues, Mapping) else queues
    for q in items:
        name = q if isinstance(q, str) else (q.get("name") if isinstance(q, Mapping) else None)
        name = name or getattr(q, "name", None)
        if name and name not in names:
            names.append(str(name))
    return names


class Control:
    """Remote control of workers (``app.control``), Celery's API.

    Args:
        app: the tq app (broker, ``control_exchange``, ``accept_content``).
        clock: the Lamport clock to share with an event dispatcher (own one if None).
    """

    def __init__(self, app: App, clock: LamportClock | None = None) -> None:
        self.app = app
        self.clock = clock or LamportClock()

    # -- plumbing -----------------------------------------------------------------------------
    @property
    def transport(self) -> RedisTransport:
        return self.app.transport

    @property
    def namespace(self) -> str:
        return str(self.app.conf.control_exchange or "celery")

    # -- broadcast ----------------------------------------------------------------------------
    def broadcast(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        destination: Destination = None,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
        callback: Callable[[Reply], None] | None = None,
    ) -> list[Reply]:
        """Send ``command`` to workers; with ``reply`` collect their answers.

        Args:
            command: the command name (``ping``, ``stats``, ``revoke`` …).
            arguments: its keyword arguments.
            destination: node names (``name@host``) that should run it; None for all.
            reply: wait for replies.
            timeout: seconds to collect replies (total) and the request's ``expires``.
            limit: stop after this many replies (default: the number of destinations).
            pattern: node-name pattern used when ``destination`` is None.
            matcher: ``glob`` (default when a pattern is given) or ``pcre``.
            callback: called with each reply as it arrives.

        Returns:
            The replies, one ``{nodename: value}`` dict each; ``[]`` without ``reply``.

        Raises:
            TransportError: the broker could not be reached.
        """
        dest = [destination] if isinstance(destination, str) else destination
        dest_t = tuple(dest) if dest is not None else None
        if pattern and not matcher:
            matcher = "glob"
        if limit is None and dest_t:
            limit = len(dest_t)
        transport = self.transport
        exchange = pidbox_exchange(self.namespace)
        replies = ReplyQueue(transport, self.namespace, new_oid(self)) if reply else None
        request = ControlRequest(
            method=command,
            arguments=dict(arguments or {}),
            destination=dest_t,
            pattern=pattern,
            matcher=matcher if pattern else None,
            ticket=str(uuid.uuid4()) if replies else None,
            reply_to=ReplyTo(replies.exchange, replies.oid) if replies else None,
            clock=self.clock.forward(),
            expires=time.time() + timeout if timeout else 0.0,
        )
        envelope = build_request(request, exchange=exchange)
        key = self.app.conf.worker_control_key
        if key:
            envelope = sign_request(envelope, str(key))
        if replies is None:
            fanout.publish(transport, exchange, "", envelope)
            return []
        replies.declare()
        try:
            if fanout.publish(transport, exchange, "", envelope) == 0:
                logger.debug("No worker is subscribed to %s; %s gets no replies", exchange, command)
                return []
            return replies.collect(
                str(request.ticket),
                timeout,
                limit,
                self.clock,
                self.app.accept_content | {JSON},
                callback,
            )
        finally:
            replies.delete()

    def inspect(
        self,
        destination: Destination = None,
        timeout: float = 1.0,
        callback: Callable[[Reply], None] | None = None,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> Inspect:
        """An ``Inspect`` bound to this client (read-only commands)."""
        return Inspect(self, destination, timeout, callback, limit, pattern, matcher)

    # -- commands (Celery's names and arguments) ---------------------------------------------
    def ping(
        self, destination: Destination = None, timeout: float = 1.0, **options: Any
    ) -> list[Reply]:
        """``[{node: {"ok": "pong"}}, …]``."""
        return self.broadcast("ping", {}, destination, reply=True, timeout=timeout, **options)

    def revoke(
        self,
        task_id: str | Iterable[str],
        destination: Destination = None,
        terminate: bool = False,
        signal: str = "SIGTERM",
        **options: Any,
    ) -> list[Reply]:
        """Revoke task(s) on every worker; a cluster-wide revoke (no destination or pattern)
        is also stored in ``tq.revoked`` until ``worker_revoked_expires`` seconds from now."""
        ids = _ids(task_id)
        if destination is None and not options.get("pattern"):
            self.store_revoked(ids)
        return self.broadcast(
            "revoke",
            {
                "task_id": task_id if isinstance(task_id, str) else ids,
                "terminate": terminate,
                "signal": signal,
            },
            destination,
            **options,
        )

    def terminate(
        self,
        task_id: str | Iterable[str],
        destination: Destination = None,
        signal: str = "SIGTERM",
        **options: Any,
    ) -> list[Reply]:
        return self.revoke(task_id, destination, terminate=True, signal=signal, **options)

    def store_revoked(self, task_id: str | Iterable[str], expires_s: float | None = None) -> None:
        """Record id(s) in ``tq.revoked`` scored by their expiry time; drop expired entries."""
        ids = _ids(task_id)
        if not ids:
            return
        ttl = (
            expires_s
            if expires_s is not None
            else float(self.app.conf.get("worker_revoked_expires") or DEFAULT_REVOKE_EXPIRES_S)
        )
        now = time.time()
        key = self.transport.keys.revoked
        pipe = self.transport.client.pipeline(transaction=True)
        pipe.zadd(key, {i: now + ttl for i in ids})
        pipe.zremrangebyscore(key, "-inf", now)
        call(pipe.execute)

    def rate_limit(
        self,
        task_name: str,
        rate_limit: str | int | float | None,
        destination: Destination = None,
        **options: Any,
    ) -> list[Reply]:
        return self.broadcast(
            "rate_limit", {"task_name": task_name, "rate_limit": rate_limit}, destination, **options
        )

    def time_limit(
        self,
        task_name: str,
        soft: float | None = None,
        hard: float | None = None,
        destination: Destination = None,
        **options: Any,
    ) -> list[Reply]:
        return self.broadcast(
            "time_limit",
            {"task_name": task_name, "hard": hard, "soft": soft},
            destination,
            **options,
        )

    def pool_grow(self, n: int = 1, destination: Destination = None, **options: Any) -> list[Reply]:
        return self.broadcast("pool_grow", {"n": n}, destination, **options)

    def pool_shrink(
        self, n: int = 1, destination: Destination = None, **options: Any
    ) -> list[Reply]:
        return self.broadcast("pool_shrink", {"n": n}, destination, **options)

    def autoscale(
        self, max: int, min: int, destination: Destination = None, **options: Any
    ) -> list[Reply]:
        return self.broadcast("autoscale", {"max": max, "min": min}, destination, **options)

    def add_consumer(
        self,
        queue: str,
        exchange: str | None = None,
        exchange_type: str = "direct",
        routing_key: str | None = None,
        options: Mapping[str, Any] | None = None,
        destination: Destination = None,
        **broadcast_options: Any,
    ) -> list[Reply]:
        arguments = {
            "queue": queue,
            "exchange": exchange,
            "exchange_type": exchange_type,
            "routing_key": routing_key,
            **dict(options or {}),
        }
        return self.broadcast("add_consumer", arguments, destination, **broadcast_options)

    def cancel_consumer(
        self, queue: str, destination: Destination = None, **options: Any
    ) -> list[Reply]:
        return self.broadcast("cancel_consumer", {"queue": queue}, destination, **options)

    def enable_events(self, destination: Destination = None, **options: Any) -> list[Reply]:
        return self.broadcast("enable_events", {}, destination, **options)

    def disable_events(self, destination: Destination = None, **options: Any) -> list[Reply]:
        return self.broadcast("disable_events", {}, destination, **options)

    def heartbeat(self, destination: Destination = None, **options: Any) -> list[Reply]:
        """Ask workers to publish a ``worker-heartbeat`` now (event receivers do at start)."""
        return self.broadcast("heartbeat", {}, destination, **options)

    def shutdown(self, destination: Destination = None, **options: Any) -> list[Reply]:
        """Warm shutdown of the addressed workers."""
        return self.broadcast("shutdown", {}, destination, **options)

    def purge(self) -> int:
        """Delete the ready messages of the default queue and ``task_queues`` (like ``celery
        purge``: held/unacked messages stay); returns how many were deleted."""
        return sum(self.transport.purge(q) for q in _queue_names(self.app.conf))

    discard_all = purge


class Inspect:
    """Read-only commands; each returns ``{nodename: reply}`` or None when nobody answered."""

    def __init__(
        self,
        control: Control,
        destination: Destination = None,
        timeout: float = 1.0,
        callback: Callable[[Reply], None] | None = None,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout
        self.callback = callback
        self.limit = limit
        self.pattern = pattern
        self.matcher = matcher

    def _request(self, command: str, **arguments: Any) -> dict[str, Any] | None:
        replies = self.control.broadcast(
            command,
            arguments,
            self.destination,
            reply=True,
            timeout=self.timeout,
            limit=self.limit,
            pattern=self.pattern,
            matcher=self.matcher,
            callback=self.callback,
        )
        if not replies:
            return None
        by_node = merge_replies(replies)
        if self.pattern:
            by_node = {
                n: r for n, r in by_node.items() if match_node(n, self.pattern, self.matcher)
            }
        return by_node

    def ping(self, destination: Destination = None) -> dict[str, Any] | None:
        if destination:
            self.destination = destination
        return self._request("ping")

    def active(self, safe: bool | None = None) -> dict[str, Any] | None:
        return self._request("active", safe=safe)

    def reserved(self, safe: bool | None = None) -> dict[str, Any] | None:
        # Celery's client drops ``safe`` here; tq sends it when set (reprs, S6) and the
        # request stays byte-for-byte Celery's otherwise
        return self._request("reserved", **({"safe": True} if safe else {}))

    def scheduled(self, safe: bool | None = None) -> dict[str, Any] | None:
        return self._request("scheduled", **({"safe": True} if safe else {}))

    def revoked(self) -> dict[str, Any] | None:
        return self._request("revoked")

    def registered(self, *taskinfoitems: str) -> dict[str, Any] | None:
        return self._request("registered", taskinfoitems=list(taskinfoitems))

    registered_tasks = registered

    def stats(self) -> dict[str, Any] | None:
        return self._request("stats")

    def active_queues(self) -> dict[str, Any] | None:
        return self._request("active_queues")

    def query_task(self, *ids: str | Sequence[str]) -> dict[str, Any] | None:
        flat = list(ids[0]) if len(ids) == 1 and not isinstance(ids[0], str) else list(ids)
        return self._request("query_task", ids=flat)

    def conf(self, with_defaults: bool = False) -> dict[str, Any] | None:
        return self._request("conf", with_defaults=with_defaults)

    def report(self) -> dict[str, Any] | None:
        return self._request("report")

    def clock(self) -> dict[str, Any] | None:
        return self._request("clock")

    def hello(self, from_node: str, revoked: Sequence[str] | None = None) -> dict[str, Any] | None:
        """Mingle: each other worker answers ``{"revoked": [ids], "clock": n}``."""
        return self._request("hello", from_node=from_node, revoked=revoked)
