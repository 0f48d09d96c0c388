"""The Redis mechanics behind ``tq.app.control``: reply queues and reply collection.

A control client's reply queue ``<oid>.reply.<ns>.pidbox`` only receives replies while its
member ``<oid>SEP SEP<queue>`` is in ``_kombu.binding.reply.<ns>.pidbox`` (workers route
replies through that table, wire spec 5.2). This module declares that member the way kombu 5.7
does (SADD + ``ZADD _kombu.binding_deadlines GT <server ms + ttl>`` in one script), pops
replies with ``BRPOP`` over the queue's four priority lists, and deletes it all afterwards.

Private to ``tq.app.control``. May import protocol and transport; never worker or console.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from tq.exceptions import ConnectionLost, ProtocolError, TransportError
from tq.protocol.control import parse_reply, reply_exchange
from tq.protocol.events import LamportClock
from tq.transport.keys import binding_member
from tq.transport.redis import CONNECTION_ERRORS, RedisTransport

logger = logging.getLogger(__name__)

#: How long the reply binding table is kept alive past now, in ms (kombu's MIN_BINDING_TTL).
REPLY_BINDING_TTL_MS = 3_600_000
#: Longest single BRPOP while collecting, in seconds.
MAX_BRPOP_S = 1.0
#: Shortest BRPOP wait in seconds (``BRPOP … 0`` would block forever).
MIN_BRPOP_S = 0.001

#: SADD the member and raise the exchange's deadline by the server clock (kombu's script).
_DECLARE_REPLY_LUA = """
redis.call('SADD', KEYS[1], ARGV[1])
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[2], 'GT', ms + tonumber(ARGV[3]), ARGV[2])
return 1
"""

_SEQ = itertools.count(1)

Reply = dict[str, Any]


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a redis-py call, turning its errors into tq's."""
    try:
        return fn(*args, **kwargs)
    except CONNECTION_ERRORS as exc:
        raise ConnectionLost(f"remote control: {exc}") from exc
    except redis.RedisError as exc:
        raise TransportError(f"remote control: {exc}") from exc


def new_oid(owner: object) -> str:
    """A fresh uuid3 reply-queue id (kombu derives it from node, pid, thread and mailbox; tq
    adds a counter so every call gets its own queue)."""
    name = f"{uuid.getnode():x}-{os.getpid():x}-{threading.get_ident():x}-{id(owner):x}"
    return str(uuid.uuid3(uuid.NAMESPACE_OID, f"{name}-{next(_SEQ):x}"))


class ReplyQueue:
    """One client's reply queue for one call.

    Args:
        transport: the broker transport.
        namespace: ``control_exchange`` (``celery``).
        oid: the reply routing key (``new_oid()``).
    """

    def __init__(self, transport: RedisTransport, namespace: str, oid: str) -> None:
        self.transport = transport
        self.oid = oid
        self.exchange = reply_exchange(namespace)
        self.name = transport.keys.reply_queue(oid, namespace)
        self.member = binding_member(oid, "", self.name)

    def declare(self) -> None:
        """Add the binding member (and refresh the table's deadline) so workers can reply."""
        keys = self.transport.keys
        client = self.transport.client
        script = client.register_script(_DECLARE_REPLY_LUA)
        call(
            script,
            keys=[keys.binding(self.exchange), keys.binding_deadlines],
            args=[self.member, self.exchange, REPLY_BINDING_TTL_MS],
            client=client,
        )

    def delete(self) -> None:
        """Remove the member from both binding sets and delete the lists; errors are logged."""
        keys = self.transport.keys
        pipe = self.transport.client.pipeline(transaction=False)
        pipe.srem(keys.binding(self.exchange), self.member)
        pipe.srem(keys.binding_permanent(self.exchange), self.member)
        pipe.delete(*keys.queue_keys(self.name))
        try:
            call(pipe.execute)
        except TransportError as exc:
            logger.warning("Could not delete reply queue %s: %s", self.name, exc)

    def collect(
        self,
        ticket: str,
        timeout: float,
        limit: int | None,
        clock: LamportClock,
        accept: frozenset[str],
        callback: Callable[[Reply], None] | None = None,
    ) -> list[Reply]:
        """Pop replies until ``limit`` of them match ``ticket`` or ``timeout`` seconds pass.

        Replies for another ticket, replies past their ``expires`` header and unreadable
        replies are dropped (the last with a warning). Each reply's clock adjusts ``clock``.
        """
        keys = self.transport.keys.queue_keys(self.name)
        client = self.transport.blocking_client()
        deadline = time.monotonic() + max(timeout, 0.0)
        out: list[Reply] = []
        while limit is None or len(out) < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wait = max(min(remaining, MAX_BRPOP_S), MIN_BRPOP_S)
            got = call(client.brpop, keys, timeout=wait)
            if got is None:
                continue
            try:
                msg = parse_reply(got[1], accept)
            except ProtocolError as exc:
                logger.warning("Ignoring an unreadable control reply on %s: %s", self.name, exc)
                continue
            if msg.clock is not None:
                clock.adjust(msg.clock)
            if msg.expires and time.time() > msg.expires:
                continue
            if msg.ticket is not None and msg.ticket != ticket:
                logger.debug("Dropping a reply for ticket %s on %s", msg.ticket, self.name)
                continue
            out.append(msg.replies)
            if callback is not None:
                callback(msg.replies)
        return out
