"""Every transport operation against a real Redis, checked key by key against the wire spec
(sections 3 and 4): LPUSH layout, atomic pop-and-record into ``unacked``, ack, requeue to the
front or back with the redelivered flags, the visibility sweep and its mutex, purge, bindings,
``global_keyprefix`` and dead letters.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from tq.protocol.envelope import build_envelope, new_tag
from tq.transport.keys import DEAD, SEP, UNACKED, UNACKED_INDEX, UNACKED_MUTEX, binding_member
from tq.transport.redis import RedisTransport, split_dead

pytestmark = pytest.mark.redis


@pytest.fixture
def transport(redis_url: str) -> Iterator[RedisTransport]:
    t = RedisTransport(redis_url, {"visibility_timeout": 60, "idle_wait": 0.1})
    yield t
    t.close()


def envelope(queue: str = "celery", priority: int = 0, task_id: str = "t1",
             exchange: str = "") -> str:
    props = {"delivery_tag": new_tag(), "priority": priority,
             "delivery_info": {"exchange": exchange, "routing_key": queue}}
    return build_envelope(b"[[1], {}, {}]", "application/json", "utf-8",
                          {"task": "tests.add", "id": task_id}, props)


def tag_of(text: str | bytes) -> str:
    return str(json.loads(text)["properties"]["delivery_tag"])


def server_now(client: redis.Redis) -> float:
    secs, micros = client.time()
    return float(secs) + micros / 1e6


# -- publishing -------------------------------------------------------------------------------
def test_publish_lpushes_the_envelope_unchanged_onto_the_priority_list(
    transport: RedisTransport, redis_client: redis.Redis
) -> None:
    first, second, urgent = envelope(), envelope(), envelope(priority=7)
    assert transport.publish(first, "celery") == 1
    transport.publish(second, "celery")
    transport.publish(urgent, "celery", priority=7)
    assert redis_client.lrange("celery", 0, -1) == [second.encode(), first.encode()]  # head
    assert redis_client.lrange(f"celery{SEP}6", 0, -1) == [urgent.encode()]
    assert transport.queue_lengths("celery") == [(0, 2), (3, 0), (6, 1), (9, 0)]
    assert transport.queue_length("celery") == 3


def test_out_of_range_priorities_are_clamped(transport: RedisTransport,
                                             redis_client: redis.Redis) -> None:
    transport.publish(envelope(), "q", priority=42)
    transport.publish(envelope(), "q", priority=-3)
    assert redis_client.llen(f"q{SEP}9") == 1
    assert redis_client.llen("q") == 1


def test_declare_queue_writes_both_binding_members(transport: RedisTransport,
                                                   redis_client: redis.Redis) -> None:
    transport.declare_queue("celery")
    member = b"celery\x06\x16\x06\x16celery"
    assert redis_client.smembers("_kombu.binding.celery") == {member}
    assert redis_client.smembers("_kombu.binding_permanent.celery") == {member}


def test_named_exchange_routes_through_the_binding_table(
    transport: RedisTransport, redis_client: redis.Redis
) -> None:
    redis_client.sadd("_kombu.binding.jobs", binding_member("jobs.*", r"^jobs\.[^\.]+$", "tq_a"),
                      binding_member("direct.key", "", "tq_b"))
    assert transport.publish(envelope(), "ignored", exchange="jobs", routing_key="jobs.add") == 1
    assert transport.publish(envelope(), "ignored", exchange="jobs", routing_key="direct.key") == 1
    assert transport.publish(envelope(), "ignored", exchange="jobs", routing_key="none") == 0
    assert (redis_client.llen("tq_a"), redis_client.llen("tq_b")) == (1, 1)
    assert redis_client.llen("ignored") == 0


# -- consuming and acking ---------------------------------------------------------------------
def test_pop_records_each_message_in_unacked_in_the_same_step(
    transport: RedisTransport, redis_client: redis.Redis
) -> None:
    text = envelope(task_id="a")
    transport.publish(text, "celery")
    before = server_now(redis_client)
    [delivery] = transport.pop(["celery"], 10)
    after = server_now(redis_client)
    assert (delivery.tag, delivery.queue, delivery.raw) == (tag_of(text), "celery", text.encode())
    assert redis_client.llen("celery") == 0
    stored = redis_client.hget(UNACKED, delivery.tag)
    assert stored == f'[{text}, "", "celery"]'.encode()
    assert json.loads(stored) == [json.loads(text), "", "celery"]
    score = redis_client.zscore(UNACKED_INDEX, delivery.tag)
    assert score is not None and before - 0.01 <= score <= after + 0.01


def test_pop_takes_priority_major_order_across_queues_and_respects_count(
    transport: RedisTransport,
) -> None:
    sent = {
        "low-a": ("a", 0), "low-b": ("b", 0), "mid-b": ("b", 4), "high-a": ("a", 9),
        "low-a2": ("a", 1),
    }
    for task_id, (queue, priority) in sent.items():
        transport.publish(envelope(queue, priority, task_id), queue, priority)
    got = transport.pop(["a", "b"], 3)
    ids = [json.loads(d.raw)["headers"]["id"] for d in got]
    assert ids == ["low-a", "low-a2", "low-b"]
    rest = [json.loads(d.raw)["headers"]["id"] for d in transport.pop(["a", "b"], 10)]
    assert rest == ["mid-b", "high-a"]
    assert transport.pop(["a", "b"], 10) == []


def test_ack_forgets_the_delivery_in_both_keys(transport: RedisTransport,
                                               redis_client: redis.Redis) -> None:
    transport.publish(envelope(), "celery")
    transport.publish(envelope(), "celery")
    first, second = transport.pop(["celery"], 2)
    transport.ack([first.tag])
    assert redis_client.hkeys(UNACKED) == [second.tag.encode()]
    assert redis_client.zrange(UNACKED_INDEX, 0, -1) == [second.tag.encode()]
    transport.ack([second.tag])
    assert not redis_client.exists(UNACKED, UNACKED_INDEX)


def test_requeue_to_the_front_is_popped_next_and_marked_redelivered(
    transport: RedisTransport, redis_client: redis.Redis
) -> None:
    held_text = envelope(task_id="held")
    transport.publish(held_text, "celery")
    [held] = transport.pop(["celery"], 1)
    transport.publish(envelope(task_id="waiting"), "celery")
    assert transport.requeue(held.tag, front=True) is True
    assert not redis_client.hexists(UNACKED, held.tag)
    assert redis_client.zscore(UNACKED_INDEX, held.tag) is None
    tail = json.loads(redis_client.lindex("celery", -1))  # RPUSH: the pop end
    assert tail["headers"]["id"] == "held"
    assert tail["headers"]["redelivered"] is True
    assert tail["properties"]["delivery_info"]["redelivered"] is True
    assert tail["properties"]["delivery_tag"] == held.tag  # the tag is kept
    assert json.loads(transport.pop(["celery"], 1)[0].raw)["headers"]["id"] == "held"
    assert transport.requeue(held.tag + "-gone") is False


def test_requeue_to_the_back_waits_behind_the_queue(transport: RedisTransport,
                                                   redis_client: redis.Redis) -> None:
    transport.publish(envelope(task_id="rejected"), "celery")
    [rejected] = transport.pop(["celery"], 1)
    transport.publish(envelope(task_id="waiting"), "celery")
    assert transport.requeue(rejected.tag, front=False)
    head = json.loads(redis_client.lindex("celery", 0))  # LPUSH: the far end
    assert head["headers"]["id"] == "rejected" and head["headers"]["redelivered"] is True
    order = [json.loads(d.raw)["headers"]["id"] for d in transport.pop(["celery"], 2)]
    assert order == ["waiting", "rejected"]


def test_requeue_keeps_the_priority_list(transport: RedisTransport,
                                         redis_client: redis.Redis) -> None:
    transport.publish(envelope(priority=6), "celery", priority=6)
    [d] = transport.pop(["celery"], 1)
    transport.requeue(d.tag, front=True)
    assert redis_client.llen(f"celery{SEP}6") == 1 and redis_client.llen("celery") == 0


def test_renew_moves_only_held_scores_forward(transport: RedisTransport,
                                              redis_client: redis.Redis) -> None:
    transport.publish(envelope(), "celery")
    [d] = transport.pop(["celery"], 1)
    redis_client.zadd(UNACKED_INDEX, {d.tag: 1000.0})
    assert transport.renew([d.tag, "not-held"]) == 1
    assert redis_client.zscore(UNACKED_INDEX, d.tag) > server_now(redis_client) - 5
    assert redis_client.zscore(UNACKED_INDEX, "not-held") is None


# -- the visibility-timeout sweep -------------------------------------------------------------
def test_sweep_restores_only_deliveries_older_than_the_timeout(
    transport: RedisTransport, redis_client: redis.Redis
) -> None:
    for task_id in ("old", "fresh"):
        transport.publish(envelope(task_id=task_id), "celery")
    old, fresh = transport.pop(["celery"], 2)
    redis_client.zadd(UNACKED_INDEX, {old.tag: server_now(redis_client) - 61})
    assert transport.restore_visible() == 1
    assert redis_client.hkeys(UNACKED) == [fresh.tag.encode()]
    restored = json.loads(redis_client.lindex("celery", -1))
    assert restored["headers"]["id"] == "old" and restored["headers"]["redelivered"] is True
    assert not redis_client.exists(UNACKED_MUTEX)  # released after the sweep


def test_sweep_is_skipped_while_another_consumer_holds_the_mutex(
    transport: RedisTransport, redis_client: redis.Redis
) -> None:
    transport.publish(envelope(), "celery")
    [d] = transport.pop(["celery"], 1)
    redis_client.zadd(UNACKED_INDEX, {d.tag: 1.0})
    redis_client.set(UNACKED_MUTEX, "someone-else", px=300_000)
    assert transport.restore_visible() == 0
    assert redis_client.hexists(UNACKED, d.tag)
    assert redis_client.get(UNACKED_MUTEX) == b"someone-else"  # never released by us
    redis_client.delete(UNACKED_MUTEX)
    assert transport.restore_visible() == 1


def test_sweep_reads_the_entry_kombu_wrote(transport: RedisTransport,
                                          redis_client: redis.Redis) -> None:
    # A delivery recorded by a Celery worker: the same layout, with kombu's own separators.
    text = envelope(task_id="from-celery", queue="other")
    tag = tag_of(text)
    redis_client.hset(UNACKED, tag, json.dumps([json.loads(text), "", "other"]))
    redis_client.zadd(UNACKED_INDEX, {tag: 10.0})
    assert transport.restore_visible() == 1
    assert json.loads(redis_client.lindex("other", -1))["headers"]["id"] == "from-celery"


# -- purge ------------------------------------------------------------------------------------
def test_purge_counts_every_priority_list_and_leaves_unacked_alone(
    transport: RedisTransport, redis_client: redis.Redis
) -> None:
    for priority in (0, 0, 3, 9):
        transport.publish(envelope(priority=priority), "celery", priority)
    [held] = transport.pop(["celery"], 1)
    transport.publish(envelope(), "other")
    assert transport.purge("celery") == 3
    assert transport.queue_length("celery") == 0
    assert redis_client.hexists(UNACKED, held.tag)
    assert redis_client.zscore(UNACKED_INDEX, held.tag) is not None
    assert redis_client.llen("other") == 1
    assert transport.purge("celery") == 0


# -- global_keyprefix -------------------------------------------------------------------------
def test_global_keyprefix_applies_to_every_key(redis_url: str,
                                               redis_client: redis.Redis) -> None:
    t = RedisTransport(redis_url, {"global_keyprefix": "pfx:"})
    try:
        text = envelope(priority=3)
        t.declare_queue("celery")
        t.publish(text, "celery", priority=3)
        [d] = t.pop(["celery"], 1)
        keys = {k.decode() for k in redis_client.keys("*")}
        assert keys == {"pfx:unacked", "pfx:unacked_index", "pfx:_kombu.binding.celery",
                        "pfx:_kombu.binding_permanent.celery"}
        assert json.loads(redis_client.hget("pfx:unacked", d.tag))[2] == "celery"  # value as is
        t.requeue(d.tag, front=True)
        assert redis_client.llen(f"pfx:celery{SEP}3") == 1
    finally:
        t.close()


# -- dead letters -----------------------------------------------------------------------------
def test_unusable_envelopes_are_dead_lettered_by_the_pop_itself(
    transport: RedisTransport, redis_client: redis.Redis
) -> None:
    no_tag = json.dumps({"body": "", "properties": {"delivery_info": {}}, "headers": {}})
    for raw in (b"not json", b"[1, 2]", no_tag.encode()):
        redis_client.lpush("celery", raw)
    deliveries = transport.pop(["celery"], 10)
    assert [d.is_dead for d in deliveries] == [True, True, True]
    assert not redis_client.exists(UNACKED)
    entries = [split_dead(e) for e in redis_client.lrange(DEAD, 0, -1)]
    assert [raw for _, raw in entries] == [no_tag.encode(), b"[1, 2]", b"not json"]
    for meta, _ in entries:
        assert set(meta) >= {"id", "reason", "queue", "time"} and meta["queue"] == "celery"
    assert [d.raw.decode() for d in deliveries] == [m["id"] for m, _ in reversed(entries)]


def test_dead_letter_entry_format_and_take(transport: RedisTransport,
                                          redis_client: redis.Redis) -> None:
    entry_id = transport.dead_letter("because", "celery", b"original\nbytes", task_id="t",
                                     task_name="n")
    raw_entry = redis_client.lindex(DEAD, 0)
    head, _, original = raw_entry.partition(b"\n")
    meta = json.loads(head)
    assert original == b"original\nbytes"
    assert meta["id"] == entry_id and meta["reason"] == "because" and meta["queue"] == "celery"
    assert (meta["task_id"], meta["task_name"]) == ("t", "n")
    assert isinstance(meta["time"], float)
    assert transport.dead_count() == 1
    assert transport.dead_take(entry_id) == (meta, b"original\nbytes")
    assert transport.dead_take(entry_id) is None
    assert transport.dead_count() == 0
