"""Celery's event messages: names, field shapes, the builder, batching and parsing.

Owns the wire shape of everything published on the ``celeryev`` fanout (wire spec 5.3): the
event types (``task-sent`` … ``task-rejected``, ``worker-online/heartbeat/offline``), the
common fields every event carries (``hostname``, ``utcoffset`` in hours *positive west of UTC*,
``pid``, ``clock``, ``timestamp``, ``type``), the routing key (the type with ``-`` turned into
``.``), the ``<group>.multi`` batches (a JSON array of up to 24 events), and the Lamport clock
that control and event senders share.

Pure: imports only the standard library, tq.exceptions and sibling protocol modules. It never
touches Redis (``tq.app.events`` publishes and receives).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tq.exceptions import DecodeError
from tq.protocol.envelope import build_envelope, parse_envelope
from tq.protocol.serializers import JSON, dumps, loads

logger = logging.getLogger(__name__)

#: The events exchange (setting ``event_exchange``); a fanout on Redis.
EVENT_EXCHANGE = "celeryev"
#: Most events one ``<group>.multi`` message holds (Celery's ``buffer_limit``).
BATCH_LIMIT = 24
#: Monitors consider a worker gone after this many heartbeat intervals (Celery's 200 %).
HEARTBEAT_EXPIRE_FACTOR = 2.0
#: Seconds of difference between an event's timestamp and its arrival that earn a warning.
HEARTBEAT_DRIFT_MAX = 16.0
#: Celery adds this to its own clock for ``task-sent`` (clients never sync their clocks).
CLIENT_CLOCK_SKEW = -1

TASK_SENT = "task-sent"
TASK_RECEIVED = "task-received"
TASK_STARTED = "task-started"
TASK_SUCCEEDED = "task-succeeded"
TASK_FAILED = "task-failed"
TASK_RETRIED = "task-retried"
TASK_REVOKED = "task-revoked"
TASK_REJECTED = "task-rejected"
WORKER_ONLINE = "worker-online"
WORKER_HEARTBEAT = "worker-heartbeat"
WORKER_OFFLINE = "worker-offline"

#: Fields every event carries, in the order Celery writes them (``type`` last).
COMMON_FIELDS: tuple[str, ...] = ("hostname", "utcoffset", "pid", "clock", "timestamp", "type")

#: Extra fields of each task event besides ``uuid`` (values are repr strings where Celery
#: sends reprs: ``args``, ``kwargs``, ``result``, ``exception``).
TASK_FIELDS: dict[str, tuple[str, ...]] = {
    TASK_SENT: (
        "root_id",
        "parent_id",
        "name",
        "args",
        "kwargs",
        "retries",
        "eta",
        "expires",
        "queue",
        "exchange",
        "routing_key",
    ),
    TASK_RECEIVED: ("name", "args", "kwargs", "root_id", "parent_id", "retries", "eta", "expires"),
    TASK_STARTED: (),
    TASK_SUCCEEDED: ("result", "runtime"),
    TASK_FAILED: ("exception", "traceback"),
    TASK_RETRIED: ("exception", "traceback"),
    TASK_REVOKED: ("terminated", "signum", "expired"),
    TASK_REJECTED: ("requeue",),
}

#: Fields of worker events. A heartbeat answering the ``heartbeat`` command carries only
#: ``freq`` and the ``sw_*`` fields (Celery sends ``freq: 5`` then).
WORKER_FIELDS: tuple[str, ...] = (
    "freq",
    "active",
    "processed",
    "loadavg",
    "sw_ident",
    "sw_ver",
    "sw_sys",
)

TASK_EVENTS = frozenset(TASK_FIELDS)
WORKER_EVENTS = frozenset({WORKER_ONLINE, WORKER_HEARTBEAT, WORKER_OFFLINE})
EVENT_TYPES = TASK_EVENTS | WORKER_EVENTS


class LamportClock:
    """A Lamport clock as kombu keeps it: ``forward`` before sending, ``adjust`` on receive.

    Thread-safe. One clock per process is shared by its control client and event dispatcher.
    """

    def __init__(self, initial: int = 0) -> None:
        self.value = initial
        self._lock = threading.Lock()

    def forward(self) -> int:
        """Tick for a local event (sending); returns the new value."""
        with self._lock:
            self.value += 1
            return self.value

    def adjust(self, other: Any) -> int:
        """Merge a received clock value (``max(mine, other) + 1``); junk values are ignored."""
        with self._lock:
            if isinstance(other, int | float) and not isinstance(other, bool):
                self.value = max(self.value, int(other)) + 1
            return self.value


def utcoffset() -> float:
    """This host's offset from UTC in hours, **positive west of UTC** (Celery's sign)."""
    if time.localtime().tm_isdst:
        return time.altzone / 3600
    return time.timezone / 3600


def routing_key_of(event_type: str) -> str:
    """The routing key an event is published with: ``worker-heartbeat`` → ``worker.heartbeat``."""
    return event_type.replace("-", ".")


def group_of(event_type: str) -> str:
    """The group of an event type: ``task-sent`` → ``task``."""
    return event_type.split("-", 1)[0]


def event(
    type: str,
    hostname: str,
    pid: int,
    clock: int | None,
    timestamp: float | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """One event dict in Celery's field order.

    Args:
        type: the event type, e.g. ``"task-succeeded"``.
        hostname: the sender's node name (``name@host``).
        pid: the sender's process id.
        clock: the sender's Lamport clock value after ``forward()``.
        timestamp: Unix time (now when omitted).
        **fields: the type's own fields (see ``TASK_FIELDS`` / ``WORKER_FIELDS``); a
            ``utcoffset`` here replaces this host's.

    Returns:
        ``{"hostname", "utcoffset", "pid", "clock", <fields…>, "timestamp", "type"}``.
    """
    out: dict[str, Any] = {
        "hostname": hostname,
        "utcoffset": utcoffset(),
        "pid": pid,
        "clock": clock,
    }
    out.update(fields)
    out["timestamp"] = time.time() if timestamp is None else timestamp
    out["type"] = type
    return out


def batches(
    events: Iterable[Mapping[str, Any]], limit: int = BATCH_LIMIT
) -> list[tuple[str, list[dict[str, Any]]]]:
    """Split events into ``(routing key, [events…])`` batches as Celery's buffer publishes them:
    grouped by type group (``task.multi`` …), at most ``limit`` per message, order kept."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    for ev in events:
        by_group.setdefault(group_of(str(ev.get("type", ""))), []).append(dict(ev))
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for group, items in by_group.items():
        for start in range(0, len(items), max(1, limit)):
            out.append((f"{group}.multi", items[start : start + limit]))
    return out


def build_event_envelope(
    payload: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    hostname: str,
    routing_key: str,
    exchange: str = EVENT_EXCHANGE,
    serializer: str = "json",
) -> str:
    """The envelope text of one event message (an object) or one batch (an array).

    Headers ``{"hostname": …}`` (Celery's gossip needs it), ``delivery_mode`` 1,
    ``delivery_info {"exchange": "celeryev", "routing_key": …}``, priority 0, base64 body.
    """
    body: Any = dict(payload) if isinstance(payload, Mapping) else [dict(e) for e in payload]
    content_type, encoding, data = dumps(body, serializer)
    return build_envelope(
        data,
        content_type,
        encoding,
        {"hostname": hostname},
        {
            "delivery_mode": 1,
            "delivery_info": {"exchange": exchange, "routing_key": routing_key},
            "priority": 0,
        },
    )


def parse_event_body(value: Any) -> list[dict[str, Any]]:
    """The events in a decoded body: an object is one event, an array is a batch.

    Elements that are not objects with a string ``type`` are dropped (with a warning).

    Raises:
        DecodeError: the body is neither an object nor an array.
    """
    if isinstance(value, dict):
        items: list[Any] = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise DecodeError(f"event body is a {type(value).__name__}, not an object or array")
    events = [e for e in items if isinstance(e, dict) and isinstance(e.get("type"), str)]
    if len(events) != len(items):
        logger.warning("Dropped %d event(s) without a type", len(items) - len(events))
    return events


def parse_event_message(
    raw: str | bytes, accept: frozenset[str] = frozenset({JSON})
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Decode an event envelope into ``(headers, events)``.

    Raises:
        DecodeError: bad envelope, bad body, or content type not accepted
            (``ContentDisallowed`` is a ``ProtocolError``; callers catch ``ProtocolError``).
    """
    env = parse_envelope(raw)
    value = loads(env.body, env.content_type, accept)
    return env.headers, parse_event_body(value)


def heartbeat_expires(last_heartbeat: float, freq: float) -> float:
    """When a worker last heard from at ``last_heartbeat`` counts as offline."""
    return last_heartbeat + float(freq) * HEARTBEAT_EXPIRE_FACTOR
