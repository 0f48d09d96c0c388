"""Beat's Redis pieces on their own: the atomic claim, anchors, and the leader lock."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tq.beat import BeatStore, LeaderLock
from tq.beat.store import lock_key
from tq.clock import SystemClock
from tq.exceptions import ConnectionLost

pytestmark = pytest.mark.redis


#: Beat's test database. The shared conftest leaves 7-15 to test files; 11-13 are the control
#: and canvas tests'. Every test works under its own key prefix and deletes only those keys, so
#: xdist workers (and other suites) sharing the database never disturb each other.
BEAT_TEST_URL = os.environ.get("TQ_TEST_BEAT_URL", "redis://127.0.0.1:6379/14")


def delete_prefixed(conn: redis.Redis, prefix: str) -> None:
    keys = list(conn.scan_iter(match=f"{prefix}*", count=500))
    if keys:
        conn.delete(*keys)


@pytest.fixture
def prefix() -> str:
    return f"test-beat-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def client(prefix: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(BEAT_TEST_URL)
    try:
        conn.ping()
    except redis.ConnectionError:
        conn.close()
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is not reachable at {BEAT_TEST_URL}")
        pytest.skip(f"Redis is not reachable at {BEAT_TEST_URL}")
    delete_prefixed(conn, prefix)
    yield conn
    delete_prefixed(conn, prefix)
    conn.close()


def make_lock(client: redis.Redis, prefix: str, ttl_s: float = 5.0) -> LeaderLock:
    return LeaderLock(client, lock_key(prefix), ttl_s, SystemClock())


def test_many_processes_claiming_one_due_time_yield_one_winner(
    client: redis.Redis, prefix: str
) -> None:
    store = BeatStore(client, prefix)
    store.ensure({"tick": 100.0})
    start = threading.Barrier(16)
    wins: list[bool] = []
    guard = threading.Lock()

    def contend() -> None:
        mine = BeatStore(client, prefix)  # redis-py clients are thread-safe
        start.wait(timeout=5)
        won = mine.claim("tick", 110.0, time.time())
        with guard:
            wins.append(won)

    threads = [threading.Thread(target=contend) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert sorted(wins) == [False] * 15 + [True]
    record = store.read(["tick"])["tick"]
    assert (record.last_due, record.total_run_count) == (110.0, 1)


def test_claims_only_move_forward(client: redis.Redis, prefix: str) -> None:
    store = BeatStore(client, prefix)
    store.ensure({"tick": 100.0})
    assert store.claim("tick", 120.0, 121.0)
    assert not store.claim("tick", 110.0, 122.0)  # older than what was sent
    assert not store.claim("tick", 120.0, 122.0)  # the same due time again
    assert not store.claim("tick", 120.0004, 122.0)  # the same millisecond
    assert store.claim("tick", 130.0, 131.0)
    record = store.read(["tick"])["tick"]
    assert (record.last_due, record.last_run_at, record.total_run_count) == (130.0, 131.0, 2)


def test_first_anchor_wins(client: redis.Redis, prefix: str) -> None:
    store = BeatStore(client, prefix)
    assert store.ensure({"tick": 100.0})["tick"].last_due == 100.0
    assert store.ensure({"tick": 200.0})["tick"].last_due == 100.0
    assert store.read(["tick", "other"]) == {"tick": store.read(["tick"])["tick"]}


def test_lock_has_one_holder_and_only_it_renews_or_releases(
    client: redis.Redis, prefix: str
) -> None:
    first, second = make_lock(client, prefix), make_lock(client, prefix)
    assert first.acquire() and first.is_valid()
    assert not second.acquire() and not second.is_valid()
    assert not second.renew()
    assert not second.release()
    assert first.holder() == first.token
    client.pexpire(lock_key(prefix), 500)
    assert first.renew()
    assert client.pttl(lock_key(prefix)) > 4000  # renewed to the full TTL
    assert first.release()
    assert first.holder() is None
    assert second.hold()


def test_expired_lock_is_taken_by_a_standby_and_the_old_holder_learns_it(
    client: redis.Redis, prefix: str
) -> None:
    leader, standby = make_lock(client, prefix, 0.3), make_lock(client, prefix, 0.3)
    assert leader.hold()
    assert not standby.hold()
    assert _eventually(standby.hold, timeout=2.0)  # the leader stopped renewing
    assert not leader.hold()
    assert not leader.is_valid()
    assert standby.holder() == standby.token


def test_redis_errors_become_tq_transport_errors(prefix: str) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    with pytest.raises(ConnectionLost, match="beat could not"):
        BeatStore(dead, prefix).read(["tick"])
    with pytest.raises(ConnectionLost):
        make_lock(dead, prefix).acquire()
    dead.close()


def _eventually(attempt: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if attempt():
            return True
        time.sleep(0.02)
    return bool(attempt())
