"""A held connection for the one command a pool child sends before every task: the early
acknowledgement (``ZREM unacked_index`` + ``HDEL unacked``, in one script, so the layout is
kombu's). Sent through redis-py's client, that call costs four times the CPU of the command
itself (pool checkout, retry wrapper, MULTI pipeline); the child pays it once per task on the
worker's hot path, so it keeps one connection of the transport's pool and talks on it directly.
The connection is still redis-py's: AUTH, TLS, SELECT and sentinel discovery happen as usual.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from typing import Any

import redis

from tq.exceptions import ConnectionLost, TransportError

#: Forget one delivery; returns how many ``unacked`` entries it removed (0 or 1).
ACK_SCRIPT = (
    "redis.call('ZREM', KEYS[1], ARGV[1]) return redis.call('HDEL', KEYS[2], ARGV[1])"
)
ACK_SHA = hashlib.sha1(ACK_SCRIPT.encode()).hexdigest()


class DirectAck:
    """``ack(tag)`` on a connection held by the calling thread (made again after a fork or
    an error).

    Args:
        transport: the ``RedisTransport`` whose pool, keys and URL are used.
    """

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self._keys = (transport.keys.unacked_index, transport.keys.unacked)
        self._local = threading.local()

    def __call__(self, tag: str) -> int:
        try:
            conn = self._connection()
            conn.send_command("EVALSHA", ACK_SHA, 2, *self._keys, tag)
            try:
                return int(conn.read_response())
            except redis.exceptions.NoScriptError:
                conn.send_command("EVAL", ACK_SCRIPT, 2, *self._keys, tag)
                return int(conn.read_response())
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self.close()
            raise ConnectionLost(f"broker {self.transport.spec.masked}: {exc}") from exc
        except redis.RedisError as exc:
            self.close()
            raise TransportError(f"broker {self.transport.spec.masked}: {exc}") from exc

    def _connection(self) -> Any:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            conn = local.conn = self.transport.client.connection_pool.get_connection()
            local.pid = os.getpid()
        return conn

    def close(self) -> None:
        """Give this thread's connection back (disconnected: a failed one may hold half a
        reply)."""
        local = self._local
        conn, local.conn = getattr(local, "conn", None), None
        if conn is None or local.pid != os.getpid():
            return
        with contextlib.suppress(Exception):  # closing must not raise on a broken pool
            conn.disconnect()
            self.transport.client.connection_pool.release(conn)
