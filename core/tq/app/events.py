"""Events over the ``celeryev`` fanout: ``EventDispatcher`` sends, ``EventReceiver`` listens.

Owns publishing and receiving of wire spec 5.3. A single event is a ``PUBLISH
/<db>.celeryev/<type with dots> <envelope>`` whose body is one JSON object; a batch is a JSON
array of up to 24 events on ``/<db>.celeryev/<group>.multi`` (what Celery workers send for
task events). A receiver ``PSUBSCRIBE``s ``/<db>.celeryev/*`` (binding key ``#``), accepts both
forms, asks every worker for a heartbeat when it starts (the ``heartbeat`` control command, as
``celery events`` and Flower do), and logs and skips anything it cannot read.

By default both share the app's control clock (``app.control.clock``), so one process keeps one
Lamport clock. May import protocol and transport; never worker, beat or console.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from tq.exceptions import ConnectionLost, ProtocolError, TransportError
from tq.protocol.events import (
    BATCH_LIMIT,
    CLIENT_CLOCK_SKEW,
    TASK_SENT,
    LamportClock,
    batches,
    build_event_envelope,
    event,
    group_of,
    parse_event_message,
    routing_key_of,
)
from tq.protocol.serializers import JSON, content_type_of
from tq.transport import fanout

if TYPE_CHECKING:
    from tq.app.base import App

logger = logging.getLogger(__name__)

#: Longest single wait on the subscription, in seconds (how late ``stop()`` may be noticed).
POLL_S = 1.0
#: Reconnect backoff after a lost subscription: first wait and cap, in seconds.
BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 5.0

Event = dict[str, Any]
Handler = Callable[[Event], Any]


def default_hostname() -> str:
    """Celery's name for a client that is not a worker: ``gen<pid>@<host>``."""
    return f"gen{os.getpid()}@{socket.gethostname()}"


class EventDispatcher:
    """Publishes events on the app's event exchange.

    Args:
        app: the tq app.
        hostname: the sender's node name (``gen<pid>@<host>`` when None).
        enabled: send nothing while False.
        clock: the Lamport clock (the app's control clock when None).
        groups: only send events of these groups (``{"worker"}``…); None for all.

    Publishing is fire-and-forget, as Pub/Sub is: a broker error is logged and the event is
    dropped (counted in ``dropped``), never raised into the caller.
    """

    def __init__(
        self,
        app: App,
        hostname: str | None = None,
        enabled: bool = True,
        clock: LamportClock | None = None,
        groups: Iterable[str] | None = None,
    ) -> None:
        self.app = app
        self.hostname = hostname or default_hostname()
        self.enabled = enabled
        self.clock = clock if clock is not None else app.control.clock
        self.groups = frozenset(groups) if groups is not None else None
        self.pid = os.getpid()
        self.exchange = str(app.conf.event_exchange or "celeryev")
        self.serializer = str(app.conf.event_serializer or "json")
        self.dropped = 0

    def enable(self) -> None:
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False

    def _wanted(self, event_type: str) -> bool:
        return self.enabled and (self.groups is None or group_of(event_type) in self.groups)

    def event(self, type: str, **fields: Any) -> Event:
        """Build one event stamped with this sender's hostname, pid and next clock value."""
        return event(type, self.hostname, self.pid, self.clock.forward(), **fields)

    def send(self, type: str, **fields: Any) -> Event | None:
        """Publish one event as a single message on ``<type with dots>``.

        Returns:
            The event sent, or None when disabled, filtered out, or the publish failed.
        """
        if not self._wanted(type):
            return None
        ev = self.event(type, **fields)
        return ev if self._publish(ev, routing_key_of(type)) else None

    def send_batch(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Publish events as ``<group>.multi`` arrays of up to 24, as Celery's buffer does.

        Events built with ``event()`` are sent as they are; plain dicts (``{"type", "uuid",
        …}``) get the missing common fields (hostname, utcoffset, pid, clock, timestamp), in
        Celery's field order.

        Returns:
            How many messages were published.
        """
        ready: list[Event] = []
        for raw in events:
            fields = dict(raw)
            kind = str(fields.pop("type", ""))
            if not self._wanted(kind):
                continue
            clock = fields.pop("clock", None)
            ready.append(
                event(
                    kind,
                    str(fields.pop("hostname", self.hostname)),
                    fields.pop("pid", self.pid),
                    self.clock.forward() if clock is None else clock,
                    fields.pop("timestamp", None),
                    **fields,
                )
            )
        return sum(1 for rk, batch in batches(ready, BATCH_LIMIT) if self._publish(batch, rk))

    def _publish(self, payload: Event | list[Event], routing_key: str) -> bool:
        try:
            envelope = build_event_envelope(
                payload, self.hostname, routing_key, self.exchange, self.serializer
            )
            fanout.publish(self.app.transport, self.exchange, routing_key, envelope)
        except (TransportError, ProtocolError) as exc:
            self.dropped += 1
            logger.warning("Event %s not sent: %s", routing_key, exc)
            return False
        return True

    def close(self) -> None:
        self.enabled = False


class EventReceiver:
    """Receives events from every sender on the app's broker.

    Args:
        app: the tq app.
        handlers: event type → function(event); the key ``"*"`` catches every other type.
        callback: called with every event no handler took.
        routing_key: binding key (``#`` = everything, ``worker.#`` = worker events).
        clock: the Lamport clock to adjust (the app's control clock when None).

    Each event gets ``local_received`` (Unix time of arrival); its ``clock`` adjusts ours
    (``task-sent`` gets ours minus one, as Celery does: clients never sync clocks).
    Timestamps are left as sent (Unix time is absolute; Celery's utcoffset shift is not done).
    """

    def __init__(
        self,
        app: App,
        handlers: Mapping[str, Handler] | None = None,
        callback: Handler | None = None,
        routing_key: str = "#",
        clock: LamportClock | None = None,
    ) -> None:
        self.app = app
        self.handlers = dict(handlers or {})
        self.callback = callback
        self.routing_key = routing_key
        self.clock = clock if clock is not None else app.control.clock
        self.exchange = str(app.conf.event_exchange or "celeryev")
        accept = {JSON}
        wanted = content_type_of(str(app.conf.event_serializer or "json"))
        if wanted in app.accept_content:
            accept.add(wanted)
        self.accept = frozenset(accept)
        self._stop = threading.Event()
        self._subscription: fanout.Subscription | None = None

    def stop(self) -> None:
        """Make a running ``capture``/``itercapture`` return (within about a second). Final:
        a stopped receiver captures nothing more; make a new one to listen again."""
        self._stop.set()

    @property
    def should_stop(self) -> bool:
        return self._stop.is_set()

    def wakeup_workers(self) -> None:
        """Broadcast ``heartbeat`` so every worker publishes a ``worker-heartbeat`` now."""
        try:
            self.app.control.broadcast("heartbeat")
        except TransportError as exc:
            logger.warning("Could not ask workers for a heartbeat: %s", exc)

    def process(self, type: str, ev: Event) -> None:
        """Hand one event to its handler; a handler's error is logged, never raised."""
        handler = self.handlers.get(type) or self.handlers.get("*") or self.callback
        if handler is None:
            return
        try:
            handler(ev)
        except Exception:  # a loop boundary: one bad handler call must not stop the receiver
            logger.exception("Event handler for %s failed", type)

    def event_from_message(self, ev: Event) -> Event:
        """Adjust our clock from the event and stamp ``local_received``."""
        if ev.get("type") == TASK_SENT:
            ev["clock"] = (self.clock.value or 1) + CLIENT_CLOCK_SKEW
            self.clock.adjust(ev["clock"])
        elif isinstance(ev.get("clock"), int):
            self.clock.adjust(ev["clock"])
        else:
            ev["clock"] = self.clock.forward()
        ev["local_received"] = time.time()
        return ev

    def decode(self, payload: bytes) -> list[Event]:
        """The events in one Pub/Sub payload; unreadable payloads are logged and give []."""
        try:
            _, events = parse_event_message(payload, self.accept)
        except ProtocolError as exc:
            logger.warning("Ignoring an unreadable event message: %s (%.120r)", exc, payload)
            return []
        return [self.event_from_message(ev) for ev in events]

    def itercapture(
        self, limit: int | None = None, timeout: float | None = None, wakeup: bool = True
    ) -> Iterator[Event]:
        """Yield events (after their handler ran) until ``limit`` events, ``timeout`` seconds
        in total, or ``stop()``. A lost connection is retried with capped backoff."""
        deadline = None if timeout is None else time.monotonic() + timeout
        sub = fanout.Subscription(self.app.transport, [(self.exchange, self.routing_key)])
        self._subscription = sub
        count = 0
        backoff = BACKOFF_BASE_S
        first = True
        try:
            while not self.should_stop and (limit is None or count < limit):
                remaining = POLL_S if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    got = sub.get(timeout=0.0 if first else min(remaining, POLL_S))
                except ConnectionLost as exc:
                    logger.warning("Event subscription lost, reconnecting: %s", exc)
                    self._stop.wait(min(backoff, max(remaining, 0.0)))
                    backoff = min(backoff * 2, BACKOFF_CAP_S)
                    first = True
                    continue
                if first:
                    # Subscribed now: ask the workers for a heartbeat so they show up at once.
                    first = False
                    backoff = BACKOFF_BASE_S
                    if wakeup:
                        self.wakeup_workers()
                if got is None:
                    continue
                for ev in self.decode(got[1]):
                    self.process(str(ev["type"]), ev)
                    count += 1
                    yield ev
                    if limit is not None and count >= limit:
                        return
        finally:
            sub.close()
            self._subscription = None

    def capture(
        self, limit: int | None = None, timeout: float | None = None, wakeup: bool = True
    ) -> int:
        """Run ``itercapture`` to its end; returns how many events were processed."""
        return sum(1 for _ in self.itercapture(limit, timeout, wakeup))
