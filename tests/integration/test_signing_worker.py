"""A tq worker with message signing set up (RELIABILITY.md S9): a signed task runs; an
unsigned, a tampered, and a foreign-signed message are each dead-lettered with one reason,
and the worker keeps working."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from tests._certs import make_identity, make_store

from tq import App
from tq.protocol import serializers, signing
from tq.protocol.envelope import build_envelope, new_tag
from tq.protocol.message import TaskSpec, build_task
from tq.protocol.signing import SEPARATOR, Signer
from tq.transport.keys import DEAD, UNACKED
from tq.transport.redis import split_dead
from tq.worker.runtime import Runtime

pytestmark = pytest.mark.redis

RESULT_TIMEOUT_S = 20.0
BODY = [[1, 2], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


@pytest.fixture
def secured(make_app: Callable[..., App], tmp_path: Path) -> Iterator[tuple[App, Signer]]:
    """An app signing with alice's key (store: alice), and bob's signer (not in the store)."""
    alice = make_identity(tmp_path / "keys", "alice")
    bob = make_identity(tmp_path / "keys", "bob")
    store = make_store(tmp_path / "store", alice)
    app = make_app(security_key=str(alice.key), security_certificate=str(alice.cert),
                   security_cert_store=str(store))
    app.setup_security()
    yield app, Signer(str(bob.key), str(bob.cert), str(store))
    signing.unregister()


def _envelope(payload: bytes, content_type: str) -> bytes:
    headers = {"lang": "py", "task": "tests.add", "id": str(uuid.uuid4())}
    props = {"delivery_tag": new_tag(), "delivery_info": {"exchange": "", "routing_key": "celery"},
             "priority": 0, "body_encoding": "base64"}
    return build_envelope(payload, content_type, "utf-8", headers, props).encode()


def _tampered() -> bytes:
    _tag, text = build_task(TaskSpec(name="tests.add", id=str(uuid.uuid4()), args=(1, 2),
                                     serializer="auth"))
    data = json.loads(text)
    parts = base64.b64decode(base64.b64decode(data["body"])).split(SEPARATOR, 4)
    parts[4] = parts[4].replace(b"[1, 2]", b"[1, 3]")
    data["body"] = base64.b64encode(base64.b64encode(SEPARATOR.join(parts))).decode()
    return json.dumps(data).encode()


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_signed_task_runs_and_bad_ones_are_dead_lettered(
    secured: tuple[App, Signer], runtime: Callable[..., Runtime], redis_client: redis.Redis,
    run_until: Callable[..., Any], pool: str,
) -> None:
    app, bob = secured
    rt = runtime(app=app, pool=pool)
    add = app.tasks["tests.add"]
    assert add.delay(2, 3).get(timeout=RESULT_TIMEOUT_S) == 5
    poison = {
        "unsigned": (_envelope(serializers.dumps_json(BODY).encode(), serializers.JSON),
                     "untrusted content"),
        "tampered": (_tampered(), "bad signature"),
        "unknown signer": (_envelope(bob.dumps(BODY), serializers.AUTH), "unknown certificate"),
    }
    for n, (shape, (message, reason)) in enumerate(poison.items(), start=1):
        redis_client.lpush("celery", message)
        assert add.delay(n, n).get(timeout=RESULT_TIMEOUT_S) == 2 * n, shape
        run_until(lambda n=n: redis_client.llen(DEAD) == n, RESULT_TIMEOUT_S,
                  f"the dead letter of the {shape} message")
        meta, original = split_dead(redis_client.lindex(DEAD, 0))
        assert original == message, shape
        assert reason in meta["reason"], (shape, meta["reason"])
        assert rt.controller is not None and rt.state == "running", shape
    run_until(lambda: redis_client.hlen(UNACKED) == 0, RESULT_TIMEOUT_S, "every ack")
    assert redis_client.llen("celery") == 0
