"""The idempotent pop (docs/faults.md T13, issue 9): every consumer pop carries a nonce and the
pop script records what it took under it (``tq.pop.<consumer id>``), so a pop whose reply was
lost (a frozen broker past ``socket_timeout``, a connection dropped after the server ran the
script) is asked for again instead of leaving its messages in ``unacked`` for the visibility
timeout.

Everything runs against the real test Redis. The lost replies are real too: a small TCP relay
between the client and Redis closes the connection instead of passing the server's answer to
a pop on, after the server has run it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
import redis

from tq.exceptions import ConnectionLost
from tq.protocol.envelope import build_envelope, new_tag
from tq.transport.keys import DEAD, UNACKED, UNACKED_INDEX
from tq.transport.redis import POP_RECORD, Delivery, RedisTransport
from tq.worker.consumer import Consumer

pytestmark = pytest.mark.redis

#: Seconds any wait in this file may take at most.
WAIT_S = 10.0


def envelope(task_id: str) -> str:
    props = {
        "delivery_tag": new_tag(),
        "priority": 0,
        "delivery_info": {"exchange": "", "routing_key": "celery"},
    }
    return build_envelope(
        b"[[1], {}, {}]", "application/json", "utf-8", {"task": "t", "id": task_id}, props
    )


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_S}s waiting for {what}")
        time.sleep(0.02)


def ids_of(deliveries: list[Delivery]) -> list[str]:
    return [json.loads(d.raw)["headers"]["id"] for d in deliveries]


def fill(client: redis.Redis, n: int, queue: str = "celery") -> list[str]:
    ids = [f"m{i}" for i in range(n)]
    for task_id in ids:
        client.lpush(queue, envelope(task_id))
    return ids


@pytest.fixture
def transport(redis_url: str) -> Iterator[RedisTransport]:
    t = RedisTransport(redis_url, {"visibility_timeout": 120, "idle_wait": 0.1})
    yield t
    t.close()


# -- the script ----------------------------------------------------------------------------
def test_a_pop_sent_again_with_its_nonce_returns_the_same_messages_and_pops_nothing(
    transport: RedisTransport, redis_client: redis.Redis
) -> None:
    fill(redis_client, 5)
    first = transport.pop(["celery"], 3, nonce="n1")
    again = transport.pop(["celery"], 3, nonce="n1")  # what a retried command does
    assert again == first  # same tags, queues and envelope bytes
    assert ids_of(first) == ["m0", "m1", "m2"]
    assert redis_client.llen("celery") == 2
    assert redis_client.hlen(UNACKED) == 3
    assert ids_of(transport.pop(["celery"], 3, nonce="n2")) == ["m3", "m4"]


def test_recover_pop_returns_what_a_pop_whose_reply_was_lost_took(
    transport: RedisTransport, redis_client: redis.Redis
) -> None:
    fill(redis_client, 4)
    taken = transport.pop(["celery"], 3, nonce="lost")  # the reply "never arrived"
    assert transport.recover_pop("lost") == taken
    assert redis_client.llen("celery") == 1


def test_recover_pop_of_a_pop_that_never_ran_claims_its_nonce(
    transport: RedisTransport, redis_client: redis.Redis
) -> None:
    fill(redis_client, 2)
    assert transport.recover_pop("late") == []
    # the lost call reaches the server only now (it sat in a frozen server's socket buffer)
    assert transport.pop(["celery"], 2, nonce="late") == []
    assert redis_client.llen("celery") == 2
    assert redis_client.hlen(UNACKED) == 0


def test_the_replay_leaves_out_messages_acked_or_held_elsewhere_since(
    transport: RedisTransport, redis_client: redis.Redis
) -> None:
    fill(redis_client, 3)
    acked, restored, kept = transport.pop(["celery"], 3, nonce="n")
    transport.ack([acked.tag])
    assert transport.requeue(restored.tag, front=True)
    other = RedisTransport(transport.url, transport.options)  # another worker, its own record
    try:
        [again] = other.pop(["celery"], 1, nonce="x")
        assert other.recover_pop("n") == []  # "n" is not in its record
    finally:
        other.close()
    assert again.tag == restored.tag
    # A stranded delivery is restored by the sweep only after the visibility timeout, so
    # whoever pops it again does so later: its score moves (here set explicitly).
    secs, micros = redis_client.time()
    redis_client.zadd(UNACKED_INDEX, {restored.tag: secs + micros / 1e6 + 5})
    assert transport.recover_pop("n") == [kept]


def test_dead_lettered_envelopes_are_replayed_as_dead_letters(
    transport: RedisTransport, redis_client: redis.Redis
) -> None:
    redis_client.lpush("celery", b"not json")
    fill(redis_client, 1)
    popped = transport.pop(["celery"], 5, nonce="d")
    assert [d.is_dead for d in popped] == [True, False]
    assert transport.recover_pop("d") == popped
    assert redis_client.llen(DEAD) == 1


def test_the_record_is_one_small_expiring_key_and_only_pops_with_a_nonce_write_it(
    transport: RedisTransport, redis_client: redis.Redis
) -> None:
    fill(redis_client, 3)
    transport.pop(["celery"], 1)  # no nonce: nothing recorded (other callers, benchmarks)
    assert not list(redis_client.scan_iter(f"{POP_RECORD}*"))
    transport.pop(["celery"], 1, nonce="a")
    assert transport.pop(["other"], 5, nonce="b") == []  # an empty pop writes nothing
    [key] = [k.decode() for k in redis_client.scan_iter(f"{POP_RECORD}*")]
    assert key == transport.pop_record_key
    value = redis_client.get(key)
    assert value is not None and value.startswith(b"a\n")
    assert 110_000 < redis_client.pttl(key) <= 120_000  # the visibility timeout
    assert set(k.decode() for k in redis_client.keys("*")) == {
        "celery",
        UNACKED,
        UNACKED_INDEX,
        key,
    }


# -- lost replies on a real connection -----------------------------------------------------
class ReplyDropper:
    """A TCP relay to Redis that, while ``drops`` > 0, closes the connection instead of passing
    on the server's answer to an ``EVALSHA`` (the server has run the script by then)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.db = parts.path
        self.drops = 0
        self.dropped = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, name="reply-dropper", daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}{self.db}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            state = {"script": False}
            for args in ((conn, up, state, True), (up, conn, state, False)):
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(
        self, src: socket.socket, dst: socket.socket, state: dict[str, bool], requests: bool
    ) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    return
                if requests:
                    state["script"] = b"EVALSHA" in data
                elif state["script"] and not data.startswith(b"-") and self.drops > 0:
                    self.drops -= 1
                    self.dropped += 1
                    return  # the script ran; its answer never reaches the client
                else:
                    state["script"] = False
                dst.sendall(data)
        except OSError:
            return
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()


@pytest.fixture
def dropper(redis_url: str) -> Iterator[ReplyDropper]:
    relay = ReplyDropper(redis_url)
    yield relay
    relay.close()


def test_a_pop_retried_after_its_connection_dropped_gets_the_first_runs_messages(
    dropper: ReplyDropper, redis_client: redis.Redis
) -> None:
    """redis-py re-sends a command whose connection failed (tq's clients retry connection
    errors, never timeouts): with the nonce the second run answers for the first."""
    fill(redis_client, 6)
    t = RedisTransport(dropper.url, {"visibility_timeout": 120})
    try:
        t.pop(["celery"], 1, nonce="warm")  # the script is loaded, the connection made
        dropper.drops = 1
        got = t.pop(["celery"], 3, nonce="n")
    finally:
        t.close()
    assert dropper.dropped == 1
    assert ids_of(got) == ["m1", "m2", "m3"]
    assert redis_client.llen("celery") == 2
    assert redis_client.hlen(UNACKED) == 4


def test_the_consumer_delivers_what_a_pop_with_a_lost_reply_took(
    dropper: ReplyDropper, redis_client: redis.Redis
) -> None:
    """Every try of a pop loses its reply (redis-py's retries too), so the pop raises; the
    consumer asks for that nonce's result once the broker answers and delivers exactly what the
    lost pop took: nothing is left in ``unacked`` for the visibility timeout."""
    ids = fill(redis_client, 20)
    t = RedisTransport(dropper.url, {"visibility_timeout": 3600, "idle_wait": 0.1})
    got: list[Delivery] = []
    lock = threading.Lock()
    credit_event = threading.Event()

    def deliver(batch: list[Delivery]) -> None:
        with lock:
            got.extend(batch)

    def credit() -> int:
        with lock:
            return 5 if len(got) < len(ids) else 0

    t.pop(["nothing"], 1, nonce="warm")  # the script is loaded before the relay drops replies
    dropper.drops = 4  # the first call and redis-py's 3 retries
    consumer = Consumer(t, lambda: ["celery"], credit, deliver, credit_event, limit=lambda: 10)
    consumer.start()
    try:
        wait_until(lambda: len(got) >= len(ids), "every message to be delivered")
    finally:
        consumer.stop()
        t.close()
    assert dropper.dropped == 4
    assert consumer.recovered > 0
    assert sorted(ids_of(got)) == sorted(ids)  # each exactly once
    assert len(got) == len(ids)
    assert redis_client.llen("celery") == 0
    # every message the consumer did not deliver would still be here, for the hour
    assert redis_client.hlen(UNACKED) == len(ids)
    assert {d.tag for d in got} == {k.decode() for k in redis_client.hkeys(UNACKED)}


def test_a_consumer_that_stops_after_a_lost_reply_still_delivers_what_the_pop_took(
    dropper: ReplyDropper, redis_client: redis.Redis
) -> None:
    """Stopping right after the failed pop: the consumer asks once more on its way out, so the
    messages reach the controller (which restores them with the rest at warm shutdown)."""
    fill(redis_client, 3)
    t = RedisTransport(dropper.url, {"visibility_timeout": 3600, "idle_wait": 0.1})
    got: list[Delivery] = []
    t.pop(["nothing"], 1, nonce="warm")
    dropper.drops = 4
    failed = threading.Event()
    consumer: Consumer

    def credit() -> int:
        if dropper.dropped >= 4:
            consumer.stop()  # stop requested while the pop was failing (sets the flag only)
            failed.set()
        return 0 if failed.is_set() else 3

    consumer = Consumer(t, lambda: ["celery"], credit, got.extend, threading.Event())
    try:
        consumer._run()  # in this thread: returns once stopped
    finally:
        t.close()
    assert consumer.unanswered is None
    assert sorted(ids_of(got)) == ["m0", "m1", "m2"]
    assert redis_client.hlen(UNACKED) == 3


def test_no_reply_at_all_is_a_connection_lost(dropper: ReplyDropper) -> None:
    t = RedisTransport(dropper.url, {"visibility_timeout": 120})
    try:
        t.pop(["nothing"], 1, nonce="warm")
        dropper.drops = 4
        with pytest.raises(ConnectionLost):
            t.pop(["celery"], 1, nonce=str(uuid.uuid4()))
    finally:
        t.close()
