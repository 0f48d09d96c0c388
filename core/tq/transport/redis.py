"""Queues on Redis in kombu's layout: publish, pop-and-record, ack, requeue, restore, purge.

Transport options (``broker_transport_options``):
    visibility_timeout (3600 s): a delivery older than this, not acked, is restored by the sweep.
    global_keyprefix (""): prepended to every key and channel.
    priority_steps ([0, 3, 6, 9]): list-key suffixes.
    unacked_mutex_expire (300 s): the sweep lock's lifetime.
    idle_wait (1.0 s): the longest a consumer blocks waiting for its first queue to fill.

This module moves bytes and envelopes; it knows nothing about tasks, apps or results.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from tq.exceptions import ConnectionLost, TransportError
from tq.protocol.envelope import clamp_priority
from tq.transport.connection import HeldConnection, make_client, parse_url
from tq.transport.keys import PRIORITY_STEPS, Keys, binding_member, parse_binding_member
from tq.transport.scripts import Scripts

logger = logging.getLogger(__name__)

#: Default visibility timeout in seconds (kombu's).
DEFAULT_VISIBILITY_TIMEOUT = 3600.0
#: The restore sweep lock's lifetime in seconds.
DEFAULT_MUTEX_EXPIRE = 300.0
#: Most unanswered sweep-lock tokens remembered for release (one per failed sweep).
UNANSWERED_LOCKS_MAX = 16

#: The consumer's pop record, ``tq.pop.<host>.<pid>.<random>`` (see ``lua/pop.lua``).
POP_RECORD = "tq.pop."
#: Shortest lifetime of a pop record in seconds (it otherwise lives a visibility timeout).
POP_RECORD_MIN_S = 60.0

CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One popped message, already recorded in the unacked hash (or dead-lettered)."""

    tag: str  # "" when the envelope was unusable and went to tq.dead
    queue: str
    raw: bytes  # the envelope text, or the dead-letter id when tag == ""

    @property
    def is_dead(self) -> bool:
        return not self.tag


def _deliveries(flat: list[Any]) -> list[Delivery]:
    """The pop script's flat ``tag, queue, envelope, ...`` reply as deliveries."""
    return [Delivery(_b(flat[i]), _b(flat[i + 1]), flat[i + 2]) for i in range(0, len(flat), 3)]


def _b(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class RedisTransport:
    """kombu-compatible Redis queues.

    Args:
        url: broker URL.
        options: ``broker_transport_options``.
    """

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.options = dict(options or {})
        self.spec = parse_url(url)
        steps = tuple(self.options.get("priority_steps") or PRIORITY_STEPS)
        self.keys = Keys(
            prefix=str(self.options.get("global_keyprefix") or ""), db=self.spec.db, steps=steps
        )
        self.visibility_timeout = float(
            self.options.get("visibility_timeout") or DEFAULT_VISIBILITY_TIMEOUT
        )
        self.mutex_expire = float(self.options.get("unacked_mutex_expire") or DEFAULT_MUTEX_EXPIRE)
        self.idle_wait = float(self.options.get("idle_wait", 1.0))
        self._client: redis.Redis | None = None
        self._blocking: redis.Redis | None = None
        self._scripts: Scripts | None = None
        self._declared: dict[str, tuple[str, str]] = {}  # marker -> (exchange, member)
        # sweep-lock tokens whose SET or unlock got no answer (released by the next sweep)
        self._unanswered_locks: deque[str] = deque(maxlen=UNANSWERED_LOCKS_MAX)
        self._lock = threading.Lock()
        self._held = HeldConnection(lambda: self.client)

    # -- clients ------------------------------------------------------------------------------
    @property
    def client(self) -> redis.Redis:
        """The shared command client (thread-safe connection pool)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = make_client(self.url, self.options)
        return self._client

    @property
    def scripts(self) -> Scripts:
        if self._scripts is None:
            self._scripts = Scripts(self.client)
        return self._scripts

    def blocking_client(self) -> redis.Redis:
        """A client for blocking waits, with a socket timeout above the longest block."""
        if self._blocking is None:
            self._blocking = make_client(self.url, self.options, blocking_timeout=self.idle_wait)
        return self._blocking

    def close(self) -> None:
        for c in (self._client, self._blocking):
            if c is not None:
                c.close()
        self._client = self._blocking = None
        self._scripts = None

    def ping(self) -> float:
        """Round-trip time of a PING in seconds."""
        import time

        start = time.perf_counter()
        self._call(self.client.ping)
        return time.perf_counter() - start

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CONNECTION_ERRORS as exc:
            raise ConnectionLost(f"broker {self.spec.masked}: {exc}") from exc
        except redis.OutOfMemoryError as exc:
            command = str(getattr(fn, "__name__", ""))
            raise TransportError(out_of_memory_text(self.spec.masked, exc, command)) from exc
        except redis.RedisError as exc:
            raise TransportError(f"broker {self.spec.masked}: {exc}") from exc

    # -- declaring and publishing -------------------------------------------------------------
    def declare_queue(self, queue: str, exchange: str | None = None, routing_key: str = "") -> None:
        """Write the queue's binding members as kombu does (once per transport)."""
        exchange = queue if exchange is None else exchange
        marker = f"{exchange}|{routing_key or queue}|{queue}"
        if marker in self._declared:
            return
        member = binding_member(routing_key or queue, "", queue)
        # Read first: a broker at maxmemory refuses every SADD (T14), even of a member it has,
        # and a worker must still start there to drain it.
        pipe = self.client.pipeline(transaction=False)
        pipe.sismember(self.keys.binding(exchange), member)
        pipe.sismember(self.keys.binding_permanent(exchange), member)
        if all(self._call(pipe.execute)):
            self._declared[marker] = (exchange, member)
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.sadd(self.keys.binding(exchange), member)
        pipe.sadd(self.keys.binding_permanent(exchange), member)
        self._call(pipe.execute)
        self._declared[marker] = (exchange, member)

    def redeclare(self) -> list[str]:
        """Declare again the bindings this transport declared that the server no longer has
        (a broker that came back without its data).

        Returns:
            The exchanges that had lost a binding (empty when nothing was missing).
        """
        items = list(self._declared.values())
        if not items:
            return []
        pipe = self.client.pipeline(transaction=False)
        for exchange, member in items:
            pipe.sismember(self.keys.binding(exchange), member)
        present = self._call(pipe.execute)
        missing = [item for item, ok in zip(items, present, strict=True) if not ok]
        if missing:
            pipe = self.client.pipeline(transaction=True)
            for exchange, member in missing:
                pipe.sadd(self.keys.binding(exchange), member)
                pipe.sadd(self.keys.binding_permanent(exchange), member)
            self._call(pipe.execute)
        return sorted({exchange for exchange, _ in missing})

    def publish(
        self,
        envelope: str,
        queue: str,
        priority: int = 0,
        exchange: str = "",
        routing_key: str | None = None,
    ) -> int:
        """Put one envelope on a queue (anonymous exchange) or route it through ``exchange``.

        Returns:
            How many queues received it (0 when a named exchange has no matching binding).
        """
        if exchange:
            targets = self.lookup(exchange, routing_key if routing_key is not None else queue)
        else:
            targets = [routing_key or queue]
        for target in targets:
            self._call(self.lpush, self.keys.queue(target, clamp_priority(priority)), envelope)
        return len(targets)

    def lpush(self, key: str, envelope: str) -> int:
        """The producer's hot path: LPUSH on a connection this thread holds (about half the
        client-side CPU of ``client.lpush``), with the client's retry policy."""
        (reply,) = self._held.run([("LPUSH", key, envelope)])
        if isinstance(reply, Exception):
            raise reply
        return int(reply)

    def publish_many(self, items: Iterable[tuple[str, str, int]]) -> None:
        """LPUSH many ``(envelope, queue, priority)`` in one pipeline round trip."""
        pipe = self.client.pipeline(transaction=False)
        for envelope, queue, priority in items:
            pipe.lpush(self.keys.queue(queue, clamp_priority(priority)), envelope)
        self._call(pipe.execute)

    def lookup(self, exchange: str, routing_key: str) -> list[str]:
        """Queues bound to ``exchange`` that ``routing_key`` reaches (direct or topic match)."""
        members = self._call(self.client.smembers, self.keys.binding(exchange))
        out: list[str] = []
        for raw in members:
            rk, pattern, queue = parse_binding_member(_b(raw))
            if pattern:
                try:
                    hit = re.match(pattern, routing_key) is not None
                except re.error:
                    hit = False
            else:
                hit = rk == routing_key or rk == ""
            if hit and queue not in out:
                out.append(queue)
        return out

    # -- consuming ----------------------------------------------------------------------------
    def pop(self, queues: Sequence[str], count: int, nonce: str | None = None) -> list[Delivery]:
        """Pop up to ``count`` messages across ``queues`` (priority-major order) and record each
        in ``unacked`` in the same atomic step. Unusable envelopes come back dead-lettered.

        Args:
            nonce: makes the pop idempotent (the consumer's pops): the script also records
                what it took under this transport's pop record (``tq.pop.<consumer id>``), and
                a call with a nonce already recorded pops nothing and returns that pop's
                deliveries again. A pop whose reply was lost is asked for with
                ``recover_pop(nonce)``. Without a nonce nothing is recorded.
        """
        if not queues or count <= 0:
            return []
        order = self.keys.pop_order(list(queues))
        keys = [
            self.keys.unacked,
            self.keys.unacked_index,
            self.keys.dead,
            self.keys.dead_seq,
            *(k for k, _ in order),
        ]
        args: list[Any] = [count, *(q for _, q in order)]
        if nonce is not None:
            keys.append(self.pop_record_key)
            args += [nonce, self._pop_record_ms()]
        flat = self._call(self.scripts.pop, keys=keys, args=args)
        return _deliveries(flat)

    def recover_pop(self, nonce: str) -> list[Delivery]:
        """The deliveries of the pop made with ``nonce`` whose reply never arrived (a socket
        timeout on a frozen broker, a connection dropped after the server ran it).

        If that pop ran, returns its messages still held in ``unacked`` (re-read by tag); if it
        did not run, returns nothing and claims the nonce, so the lost call, should the server
        still run it later, pops nothing. Pops nothing itself.
        """
        keys = [
            self.keys.unacked,
            self.keys.unacked_index,
            self.keys.dead,
            self.keys.dead_seq,
            self.pop_record_key,
        ]
        flat = self._call(self.scripts.pop, keys=keys, args=[0, nonce, self._pop_record_ms()])
        return _deliveries(flat)

    @property
    def pop_record_key(self) -> str:
        """This transport's pop record (one small string, replaced by each pop that takes
        something, expiring after the visibility timeout; Celery and kombu never read it)."""
        key: str | None = getattr(self, "_pop_record", None)
        if key is None:
            consumer = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
            key = self._pop_record = f"{self.keys.prefix}{POP_RECORD}{consumer}"
        return key

    def _pop_record_ms(self) -> int:
        # Past the visibility timeout the sweep restores what a lost pop took anyway.
        return int(max(self.visibility_timeout, POP_RECORD_MIN_S) * 1000)

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        """Block until the first queue's main list has a message, or ``timeout`` passes.

        Uses ``BLMOVE key key RIGHT RIGHT``, which rotates a list onto itself, so nothing is
        taken: it is a blocking peek. Messages on other queues or priority lists are found by
        the next ``pop`` after the timeout.
        """
        if not queues:
            return False
        key = self.keys.queue(queues[0], 0)
        client = self.blocking_client()
        try:
            got = client.blmove(key, key, max(timeout, 0.01), "RIGHT", "RIGHT")
        except CONNECTION_ERRORS as exc:
            raise ConnectionLost(f"broker {self.spec.masked}: {exc}") from exc
        return got is not None

    def ack(self, tags: Sequence[str]) -> None:
        """Forget deliveries (``ZREM unacked_index`` + ``HDEL unacked``, one transaction)."""
        if not tags:
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self.keys.unacked_index, *tags)
        pipe.hdel(self.keys.unacked, *tags)
        self._call(pipe.execute)

    def renew(self, tags: Sequence[str], offset: float = 0.0) -> int:
        """Move held deliveries' scores to the server's now (+ ``offset`` seconds)."""
        if not tags:
            return 0
        n: int = self._call(
            self.scripts.renew, keys=[self.keys.unacked_index], args=[offset, *tags]
        )
        return n

    def requeue(self, tag: str, front: bool = False, rewrite: Any = None) -> bool:
        """Put a held delivery back on its queue and forget it, atomically (WATCH/MULTI).

        Args:
            tag: the delivery tag.
            front: RPUSH to be popped next (restore), else LPUSH to the back (reject+requeue).
            rewrite: optional function ``dict -> dict`` applied to the envelope first.

        Returns:
            False when the tag was no longer in ``unacked`` (someone else acked or restored it).
        """
        client = self.client
        for _ in range(5):
            with client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(self.keys.unacked)
                    entry = pipe.hget(self.keys.unacked, tag)
                    if entry is None:
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    self._restore_into(pipe, entry, front, rewrite)
                    pipe.zrem(self.keys.unacked_index, tag)
                    pipe.hdel(self.keys.unacked, tag)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue
                except CONNECTION_ERRORS as exc:
                    raise ConnectionLost(f"broker {self.spec.masked}: {exc}") from exc
        raise TransportError(f"could not requeue {tag}: unacked hash kept changing")

    def _restore_into(self, pipe: Any, entry: bytes, front: bool, rewrite: Any) -> None:
        try:
            envelope, exchange, routing_key = json.loads(entry)
            envelope.setdefault("headers", {})["redelivered"] = True
            envelope["properties"].setdefault("delivery_info", {})["redelivered"] = True
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            logger.error("Unacked entry is unreadable, moving it to %s: %s", self.keys.dead, exc)
            self._dead_into(pipe, "unacked entry unreadable", "", entry)
            return
        if rewrite is not None:
            envelope = rewrite(envelope)
        priority = clamp_priority(envelope["properties"].get("priority"))
        targets = (
            [routing_key] if not exchange else self.lookup(exchange, routing_key) or [routing_key]
        )
        text = json.dumps(envelope)
        for queue in targets:
            key = self.keys.queue(queue, priority)
            (pipe.rpush if front else pipe.lpush)(key, text)

    def restore_visible(self, limit: int | None = None) -> int:
        """The visibility-timeout sweep: restore deliveries older than the timeout.

        Serialised by ``unacked_mutex`` exactly as kombu does, so tq and Celery workers can
        recover each other's messages. Uses the server's clock (``TIME``), not the local one.
        """
        token = str(uuid.uuid4())
        client = self.client
        self._release_unanswered_locks()
        try:
            got = self._call(
                client.set,
                self.keys.unacked_mutex,
                token,
                nx=True,
                px=int(self.mutex_expire * 1000),
            )
            if not got and _b(self._call(client.get, self.keys.unacked_mutex) or b"") != token:
                # (A SET re-sent after a dropped connection fails when the first one took the
                # lock for us; only then does the lock hold our token.)
                return 0
        except TransportError:
            self._unanswered_locks.append(token)  # the SET may still run on a frozen broker
            raise
        restored = 0
        try:
            secs, micros = self._call(client.time)
            ceiling = secs + micros / 1e6 - self.visibility_timeout
            tags = self._call(
                client.zrangebyscore,
                self.keys.unacked_index,
                "-inf",
                ceiling,
                start=0 if limit else None,
                num=limit,
            )
            for tag in tags:
                if self.requeue(_b(tag), front=True):
                    restored += 1
        finally:
            try:
                self._call(self.scripts.unlock, keys=[self.keys.unacked_mutex], args=[token])
            except TransportError:
                self._unanswered_locks.append(token)
                raise
        if restored:
            logger.warning("Restored %d message(s) past the visibility timeout", restored)
        return restored

    def _release_unanswered_locks(self) -> None:
        """Release sweep locks whose SET or unlock got no answer (a frozen or dropped broker):
        the SET may have run after all, and a lock nobody releases stops every worker's sweep
        for ``unacked_mutex_expire``. Compare-and-delete, so someone else's lock is safe."""
        while self._unanswered_locks:
            token = self._unanswered_locks[0]
            self._call(self.scripts.unlock, keys=[self.keys.unacked_mutex], args=[token])
            self._unanswered_locks.popleft()

    # -- inspection and maintenance -----------------------------------------------------------
    def queue_lengths(self, queue: str) -> list[tuple[int, int]]:
        """Ready messages per priority step, one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for key in self.keys.queue_keys(queue):
            pipe.llen(key)
        counts = self._call(pipe.execute)
        return list(zip(self.keys.steps, counts, strict=True))

    def queue_length(self, queue: str) -> int:
        return sum(n for _, n in self.queue_lengths(queue))

    def purge(self, queue: str) -> int:
        """Delete the queue's ready messages (all priority lists); returns how many went.

        Like ``celery purge``, held (unacked) messages are not touched.
        """
        keys = self.keys.queue_keys(queue)
        pipe = self.client.pipeline(transaction=True)
        for key in keys:
            pipe.llen(key)
        for key in keys:
            pipe.delete(key)
        out = self._call(pipe.execute)
        return int(sum(out[: len(keys)]))

    def unacked_count(self) -> int:
        n: int = self._call(self.client.zcard, self.keys.unacked_index)
        return n

    def unacked_oldest(self, n: int = 1) -> list[tuple[str, float]]:
        """The ``n`` oldest deliveries as ``(tag, score)``."""
        rows = self._call(self.client.zrange, self.keys.unacked_index, 0, n - 1, withscores=True)
        return [(_b(t), float(s)) for t, s in rows]

    def unacked_entries(self, tags: Sequence[str]) -> list[bytes | None]:
        if not tags:
            return []
        out: list[bytes | None] = self._call(self.client.hmget, self.keys.unacked, list(tags))
        return out

    def server_time(self) -> float:
        secs, micros = self._call(self.client.time)
        return float(secs) + micros / 1e6

    # -- dead letters -------------------------------------------------------------------------
    def dead_letter(self, reason: str, queue: str, raw: bytes | str, **meta: Any) -> str:
        """Record a message that cannot run in ``tq.dead``; returns its id."""
        seq = self._call(self.client.incr, self.keys.dead_seq)
        entry_id = f"d{seq}"
        pipe = self.client.pipeline(transaction=False)
        self._dead_into(pipe, reason, queue, raw, entry_id=entry_id, **meta)
        self._call(pipe.execute)
        return entry_id

    def _dead_into(
        self,
        pipe: Any,
        reason: str,
        queue: str,
        raw: bytes | str,
        entry_id: str | None = None,
        **meta: Any,
    ) -> None:
        import time

        record = {
            "id": entry_id or f"u{uuid.uuid4().hex[:12]}",
            "reason": reason,
            "queue": queue,
            "time": time.time(),
            **meta,
        }
        data = raw.encode("utf-8") if isinstance(raw, str) else raw
        pipe.lpush(
            self.keys.dead, json.dumps(record, separators=(",", ":")).encode() + b"\n" + data
        )

    def dead_letters(self, start: int = 0, stop: int = 99) -> list[tuple[dict[str, Any], bytes]]:
        """Dead letters, newest first: ``(meta, original bytes)``."""
        rows = self._call(self.client.lrange, self.keys.dead, start, stop)
        return [split_dead(r) for r in rows]

    def dead_count(self) -> int:
        n: int = self._call(self.client.llen, self.keys.dead)
        return n

    def dead_take(self, entry_id: str) -> tuple[dict[str, Any], bytes] | None:
        """Remove one dead letter by id and return it (None if it is gone)."""
        got = self._call(self.scripts.dead_take, keys=[self.keys.dead], args=[entry_id])
        return split_dead(got) if got else None

    def dead_purge(self) -> int:
        pipe = self.client.pipeline(transaction=True)
        pipe.llen(self.keys.dead)
        pipe.delete(self.keys.dead)
        n, _ = self._call(pipe.execute)
        return int(n)


def split_dead(entry: bytes) -> tuple[dict[str, Any], bytes]:
    """``(meta, original bytes)`` of a ``tq.dead`` entry."""
    head, _, raw = entry.partition(b"\n")
    try:
        meta = json.loads(head)
    except ValueError:
        meta = {"id": "?", "reason": "unreadable dead-letter entry"}
    return meta, raw


def out_of_memory_text(masked_url: str, exc: Exception, command: str = "") -> str:
    """The error for a write the broker refused at ``maxmemory`` (RELIABILITY.md T14)."""
    named = re.search(r"\(([A-Z]+) ", str(exc))  # a pipeline's error names its command
    if named:
        command = named.group(1)
    what = f"a {command.upper()}" if command.isalpha() and command != "execute" else "a write"
    return (
        f"broker {masked_url} is out of memory: it refused {what} (OOM command not allowed "
        "when used memory > 'maxmemory'), so that write was not stored (in a pipelined batch, "
        "earlier commands may have been). Free memory on the broker (let workers drain the "
        "queues, expire or delete old results) or raise its maxmemory, then send again"
    )
