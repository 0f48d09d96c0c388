"""The result backend against a real Redis (wire spec section 6): the meta layout, SETEX and
PUBLISH of the same JSON, never overwriting SUCCESS, waiting woken by the PUBLISH, and safe
rebuilding of stored exceptions (RELIABILITY.md S2).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from tq import App
from tq.backend.meta import TASK_KEY_PREFIX
from tq.backend.redis import RedisBackend
from tq.exceptions import RemoteError, TaskRevokedError, TimeoutError

pytestmark = pytest.mark.redis


@pytest.fixture
def backend(redis_url: str) -> Iterator[RedisBackend]:
    b = RedisBackend(redis_url)
    yield b
    b.close()


def meta_key(task_id: str) -> str:
    return f"{TASK_KEY_PREFIX}{task_id}"


def store_raw(client: redis.Redis, task_id: str, meta: dict[str, Any]) -> None:
    client.set(meta_key(task_id), json.dumps({**meta, "task_id": task_id}))


def test_store_writes_celerys_meta_with_setex_and_publishes_the_same_json(
    backend: RedisBackend, redis_client: redis.Redis, run_until: Callable[..., Any]
) -> None:
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(meta_key("t1"))
    try:
        assert backend.store_result("t1", 5, "SUCCESS") is True
        message = run_until(lambda: pubsub.get_message(timeout=0.1), 5, "the PUBLISH")
    finally:
        pubsub.close()
    stored = redis_client.get(meta_key("t1"))
    assert message["data"] == stored
    meta = json.loads(stored)
    assert set(meta) == {"status", "result", "traceback", "children", "date_done", "task_id"}
    assert (meta["status"], meta["result"], meta["traceback"], meta["children"]) == (
        "SUCCESS", 5, None, [])
    assert meta["task_id"] == "t1" and meta["date_done"].endswith("+00:00")
    assert 86390 < redis_client.ttl(meta_key("t1")) <= 86400


def test_results_without_expiry_use_set(redis_url: str, redis_client: redis.Redis) -> None:
    b = RedisBackend(redis_url, expires=0)
    try:
        b.store_result("t", 1, "SUCCESS")
    finally:
        b.close()
    assert redis_client.ttl(meta_key("t")) == -1


def test_a_stored_success_is_never_overwritten(backend: RedisBackend,
                                               redis_client: redis.Redis) -> None:
    assert backend.store_result("t", 1, "SUCCESS")
    before = redis_client.get(meta_key("t"))
    assert backend.store_result("t", ValueError("late"), "FAILURE") is False
    assert backend.store_result("t", None, "STARTED") is False
    assert redis_client.get(meta_key("t")) == before


def test_non_final_states_may_be_overwritten(backend: RedisBackend) -> None:
    backend.store_result("t", {"pid": 1}, "STARTED")
    backend.store_result("t", ValueError("x"), "RETRY")
    backend.store_result("t", 3, "SUCCESS")
    assert backend.get_meta("t")["status"] == "SUCCESS"


def test_a_final_failure_is_not_replaced_by_a_stale_unready_state(
    backend: RedisBackend,
) -> None:
    assert backend.store_result("t", ValueError("final"), "FAILURE")
    assert backend.store_result("t", ValueError("stale"), "RETRY") is False
    assert backend.store_result("t", {"pid": 1}, "STARTED") is False
    assert backend.get_meta("t")["status"] == "FAILURE"
    assert backend.store_result("t", 5, "SUCCESS"), "a re-run may still finish it"
    assert backend.get_meta("t")["result"] == 5


def test_failure_meta_encodes_the_exception_like_celery(backend: RedisBackend,
                                                       redis_client: redis.Redis) -> None:
    backend.store_result("t", ValueError("boom", 42), "FAILURE", traceback="Traceback ...")
    meta = json.loads(redis_client.get(meta_key("t")))
    assert meta["result"] == {"exc_type": "ValueError", "exc_message": ["boom", 42],
                              "exc_module": "builtins"}
    assert meta["traceback"] == "Traceback ..."
    backend.store_result("r", TaskRevokedError("revoked"), "REVOKED")
    assert json.loads(redis_client.get(meta_key("r")))["result"]["exc_module"] == (
        "celery.exceptions")


def test_missing_key_reads_as_pending(backend: RedisBackend) -> None:
    assert backend.get_meta("nope")["status"] == "PENDING"
    assert [m["status"] for m in backend.get_many(["nope", "nope2"])] == ["PENDING", "PENDING"]


def test_forget_deletes_the_key(backend: RedisBackend, redis_client: redis.Redis) -> None:
    backend.store_result("t", 1, "SUCCESS")
    backend.forget("t")
    assert not redis_client.exists(meta_key("t"))


def test_wait_is_woken_by_the_publish_alone(
    backend: RedisBackend, redis_client: redis.Redis, run_until: Callable[..., Any]
) -> None:
    # Only a PUBLISH, no key: a reader that polled the key would never see it. Channels are
    # server-wide (not per database), so the id is unique to this run.
    task_id = f"t-{uuid.uuid4().hex}"
    got: list[dict[str, Any]] = []
    waiter = threading.Thread(
        target=lambda: got.append(backend.wait_for(task_id, timeout=20)), name="test-waiter"
    )
    waiter.start()
    try:
        run_until(lambda: redis_client.pubsub_numsub(meta_key(task_id))[0][1] == 1, 15,
                  "the waiter's SUBSCRIBE")
        payload = json.dumps({"status": "SUCCESS", "result": 7, "traceback": None,
                              "children": [], "date_done": None, "task_id": task_id})
        redis_client.publish(meta_key(task_id), payload)
        waiter.join(0.8)  # well below the 1 s safety poll: the PUBLISH woke it
        assert not waiter.is_alive()
    finally:
        waiter.join(25)
    assert got[0]["result"] == 7
    assert not redis_client.exists(meta_key(task_id))
    run_until(lambda: redis_client.pubsub_numsub(meta_key(task_id))[0][1] == 0, 5,
              "UNSUBSCRIBE")


def test_wait_sees_a_result_stored_before_it_started(backend: RedisBackend) -> None:
    backend.store_result("t", "done", "SUCCESS")
    assert backend.wait_for("t", timeout=1)["result"] == "done"


def test_wait_times_out(backend: RedisBackend) -> None:
    with pytest.raises(TimeoutError):
        backend.wait_for("never", timeout=0.3)


def test_async_result_get_returns_the_value_and_raises_builtins_as_themselves(
    app: App, redis_client: redis.Redis
) -> None:
    store_raw(redis_client, "ok", {"status": "SUCCESS", "result": [1, "a"]})
    assert app.AsyncResult("ok").get(timeout=2) == [1, "a"]
    for exc_type, cls in (("ValueError", ValueError), ("KeyError", KeyError),
                          ("ZeroDivisionError", ZeroDivisionError)):
        store_raw(redis_client, exc_type, {"status": "FAILURE", "result": {
            "exc_type": exc_type, "exc_message": ["why"], "exc_module": "builtins"}})
        with pytest.raises(cls) as info:
            app.AsyncResult(exc_type).get(timeout=2)
        assert type(info.value) is cls and info.value.args == ("why",)
    assert app.AsyncResult("ValueError").get(timeout=2, propagate=False).args == ("why",)


def test_stored_os_system_imports_and_executes_nothing(
    app: App, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    store_raw(redis_client, "evil", {"status": "FAILURE", "result": {
        "exc_type": "system", "exc_message": ["touch /tmp/tq-pwned"], "exc_module": "os"}})
    with pytest.raises(RemoteError) as info:
        app.AsyncResult("evil").get(timeout=2)
    assert calls == []
    assert (info.value.exc_type, info.value.exc_module) == ("system", "os")


def test_stored_exception_from_an_unloaded_module_is_never_imported(
    app: App, redis_client: redis.Redis
) -> None:
    module = "tq_tests_never_imported_module"
    assert module not in sys.modules
    store_raw(redis_client, "custom", {"status": "FAILURE", "result": {
        "exc_type": "Boom", "exc_message": ["custom", 42], "exc_module": module}})
    with pytest.raises(RemoteError) as info:
        app.AsyncResult("custom").get(timeout=2)
    assert module not in sys.modules
    assert info.value.args == ("custom", 42)
    assert "Boom" in str(info.value)


def test_celery_named_exceptions_come_back_as_tqs(app: App, redis_client: redis.Redis) -> None:
    store_raw(redis_client, "rev", {"status": "REVOKED", "result": {
        "exc_type": "TaskRevokedError", "exc_message": ["revoked"],
        "exc_module": "celery.exceptions"}})
    with pytest.raises(TaskRevokedError):
        app.AsyncResult("rev").get(timeout=2)


def test_malformed_exception_payloads_become_remote_errors(app: App,
                                                           redis_client: redis.Redis) -> None:
    store_raw(redis_client, "odd", {"status": "FAILURE", "result": "just a string"})
    with pytest.raises(RemoteError):
        app.AsyncResult("odd").get(timeout=2)
