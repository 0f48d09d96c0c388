"""The broker: kombu's Redis layout for queues, the unacked set, bindings and fanout."""

from __future__ import annotations

from tq.transport.redis import Delivery, RedisTransport

__all__ = ["Delivery", "RedisTransport"]
