"""Fanout exchanges on Redis Pub/Sub, as kombu emulates them (pidbox control, celeryev events).

Publishing is ``PUBLISH /<db>.<exchange>[/<routing key>] <envelope>``; consuming is a
``PSUBSCRIBE`` on the same names with ``#`` turned into ``*``. Nothing is stored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis

from tq.exceptions import ConnectionLost
from tq.transport.redis import CONNECTION_ERRORS, RedisTransport

logger = logging.getLogger(__name__)


def publish(transport: RedisTransport, exchange: str, routing_key: str, envelope: str) -> int:
    """Publish to a fanout exchange; returns the number of subscribers that got it."""
    channel = transport.keys.fanout_channel(exchange, routing_key)
    n: int = transport._call(transport.client.publish, channel, envelope)
    return n


class Subscription:
    """A Pub/Sub subscription to fanout patterns that survives reconnects.

    Args:
        transport: the broker transport.
        patterns: ``(exchange, binding key)`` pairs; ``#`` in a key becomes ``*``.
    """

    def __init__(self, transport: RedisTransport, patterns: Sequence[tuple[str, str]]) -> None:
        self.transport = transport
        self.channels = [
            transport.keys.fanout_channel(ex, key.replace("#", "*")) for ex, key in patterns
        ]
        self._client: redis.Redis | None = None
        self._pubsub: Any = None

    def _connect(self) -> None:
        from tq.transport.connection import make_client

        self.close()
        self._client = make_client(self.transport.url, self.transport.options, blocking_timeout=1.0)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe(*self.channels)

    def get(self, timeout: float = 1.0) -> tuple[str, bytes] | None:
        """The next ``(channel, payload)`` or None after ``timeout``.

        Raises:
            ConnectionLost: the connection dropped; the next call resubscribes.
        """
        if self._pubsub is None:
            try:
                self._connect()
            except CONNECTION_ERRORS as exc:
                self.close()
                raise ConnectionLost(f"subscribe to {self.channels}: {exc}") from exc
        try:
            msg = self._pubsub.get_message(timeout=timeout)
        except CONNECTION_ERRORS as exc:
            self.close()
            raise ConnectionLost(f"subscription {self.channels}: {exc}") from exc
        if msg is None or msg.get("type") not in ("pmessage", "message"):
            return None
        channel = msg["channel"]
        if isinstance(channel, bytes):
            channel = channel.decode("utf-8", "replace")
        data = msg["data"]
        return channel, data if isinstance(data, bytes) else str(data).encode()

    def close(self) -> None:
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            except Exception:  # closing a broken connection may fail; nothing to keep
                logger.debug("pubsub close failed", exc_info=True)
        if self._client is not None:
            self._client.close()
        self._pubsub = None
        self._client = None
