"""Flower 2.x watching and driving a tq worker (issue 5, wire spec 11.3 point 5).

``celery -A tests.interop.celery_cli_app flower`` runs against Redis db 6 (``TQ_CTL_TEST_URL``)
beside a ``tq-console --worker -A tests.interop.ctl_tasks:app -E -n tqw1@%h`` subprocess. The
tests call Flower's HTTP API with urllib: the worker list (from remote control), its online
status and the task list (from events), and the control endpoints (pool grow/shrink, rate limit,
revoke with terminate) — each checked by its effect on the tq worker.

Flower 2.x refuses its API without authentication unless ``FLOWER_UNAUTHENTICATED_API`` is set;
these tests start it with ``--basic-auth`` and send the credentials instead.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from tests.interop.test_remote_control import (
    CELERY_APP,
    HOST,
    TQ_NODE,
    Proc,
    celery_app,
    celery_inspect,
    child_env,
    claim_db,
    clean_db,
    db_client,
    free_port,
    redis_available,
    tq_worker,
    wait_celery_state,
    wait_for,
)

pytestmark = [
    pytest.mark.interop,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.xdist_group("tq_ctl_db6"),
]

#: Seconds Flower may take to start and to see a worker (it inspects at start, then on refresh).
FLOWER_START_S = 60.0
#: Seconds for something that travels by events (Flower folds them as they arrive).
EVENTS_S = 30.0
USER, PASSWORD = "tq", f"pw-{uuid.uuid4().hex[:12]}"


class Flower:
    """A running Flower and a tiny urllib client for its API (basic auth)."""

    def __init__(self, proc: Proc, port: int) -> None:
        self.proc = proc
        self.base = f"http://127.0.0.1:{port}"
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}"}

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None, timeout: float = 30.0
    ) -> tuple[int, str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        if method == "POST" and data is None:
            data = b""
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers=self.headers
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, f"GET {path} -> {status}: {body}\n{self.proc.output()[-2000:]}"
        return json.loads(body)

    def post(self, path: str, form: dict[str, str] | None = None) -> Any:
        status, body = self.request("POST", path, form)
        assert status == 200, f"POST {path} -> {status}: {body}\n{self.proc.output()[-2000:]}"
        return json.loads(body)

    def up(self) -> bool:
        try:
            return self.request("GET", "/api/workers?status=1", timeout=2.0)[0] == 200
        except OSError:
            return False

    def worker(self, node: str) -> dict[str, Any] | None:
        """Flower's record of ``node`` after a refresh (remote control), if it has stats."""
        got = self.get(f"/api/workers?refresh=1&workername={urllib.parse.quote(node)}")
        record = got.get(node) or {}
        return record if record.get("stats") else None

    def task(self, task_id: str) -> dict[str, Any]:
        status, body = self.request("GET", f"/api/task/info/{task_id}")
        return json.loads(body) if status == 200 else {}


@pytest.fixture(scope="module")
def db() -> Iterator[redis.Redis]:
    redis_available()
    claim_db()
    clean_db()
    client = db_client()
    yield client
    client.close()
    clean_db()


@pytest.fixture(scope="module")
def worker(db: redis.Redis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    log = tmp_path_factory.mktemp("flower-tqw1") / "worker.log"
    with tq_worker(log) as proc:
        yield proc


@pytest.fixture(scope="module")
def flower(worker: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flower]:
    """Flower on a free port of 127.0.0.1, started after the worker; stopped at the end."""
    port = free_port()
    log = tmp_path_factory.mktemp("flower") / "flower.log"
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        CELERY_APP,
        "flower",
        f"--port={port}",
        "--address=127.0.0.1",
        f"--basic-auth={USER}:{PASSWORD}",
        "--persistent=False",
    ]
    proc = Proc(cmd, log, child_env())
    client = Flower(proc, port)
    try:

        def ready() -> bool:
            if not proc.alive():
                pytest.fail(f"flower exited with {proc.popen.returncode}:\n{proc.output()}")
            return client.up()

        wait_for(ready, FLOWER_START_S, "Flower to serve its API", log)
        yield client
    finally:
        proc.stop(10.0)


@pytest.fixture
def own_worker(
    db: redis.Redis, flower: Flower, tmp_path: Path
) -> Iterator[Callable[[str], tuple[Proc, str]]]:
    """``own_worker(name)``: a tq worker of this test alone on queue ``<name>_q``, already known
    to Flower; returns ``(process, node)``. Used where pool children come and go."""
    with contextlib.ExitStack() as stack:

        def start(name: str) -> tuple[Proc, str]:
            proc = stack.enter_context(
                tq_worker(tmp_path / f"{name}.log", name=name, args=("-Q", f"{name}_q"))
            )
            node = f"{name}@{HOST}"
            wait_for(
                lambda: flower.worker(node),
                FLOWER_START_S,
                f"Flower to know {node}",
                flower.proc.log,
            )
            return proc, node

        yield start


def celery_stats(node: str) -> dict[str, Any]:
    got = celery_inspect(node).stats() or {}
    assert node in got, f"{node} did not answer stats"
    return dict(got[node])


def test_flower_lists_the_tq_worker_with_stats_pool_and_queues(flower: Flower) -> None:
    record = wait_for(
        lambda: flower.worker(TQ_NODE),
        FLOWER_START_S,
        "Flower to list the tq worker",
        flower.proc.log,
    )
    stats = record["stats"]
    assert stats["pool"]["max-concurrency"] == 2 and len(stats["pool"]["processes"]) == 2
    assert stats["broker"]["transport"] == "redis" and isinstance(stats["total"], dict)
    assert [q["name"] for q in record["active_queues"]] == ["celery"]
    assert {"rc.add", "rc.sleep", "rc.touch"} <= set(record["registered"])
    assert record["conf"]["stripe_secret_key"] == "********"
    assert "Traceback" not in flower.proc.output()


def test_flower_shows_the_tq_worker_online(flower: Flower) -> None:
    def online() -> bool:
        return flower.get("/api/workers?status=1").get(TQ_NODE) is True

    wait_for(online, EVENTS_S, "Flower to see the tq worker online (heartbeats)", flower.proc.log)


def test_flower_lists_tq_tasks_from_events(flower: Flower, worker: Proc) -> None:
    ok = celery_app().send_task("rc.add", args=[2, 3])
    bad = celery_app().send_task("rc.fail", args=["boom"])
    wait_celery_state(ok.id, "SUCCESS", 30.0, worker.log)
    wait_celery_state(bad.id, "FAILURE", 30.0, worker.log)

    def listed() -> dict[str, Any] | None:
        tasks = flower.get("/api/tasks")
        if tasks.get(ok.id, {}).get("state") == "SUCCESS" and bad.id in tasks:
            return tasks
        return None

    tasks = wait_for(listed, EVENTS_S, "Flower to list the tasks", flower.proc.log)
    done = tasks[ok.id]
    assert (done["name"], done["result"], done["worker"]) == ("rc.add", "5", TQ_NODE)
    assert done["args"] == "[2, 3]" and done["received"] and done["started"]
    assert done["runtime"] is not None and done["runtime"] >= 0
    wait_for(
        lambda: flower.task(bad.id).get("state") == "FAILURE",
        EVENTS_S,
        "the failure in Flower",
        flower.proc.log,
    )
    failed = flower.task(bad.id)
    assert failed["exception"] == "ValueError('boom')" and "ValueError" in failed["traceback"]
    assert failed["worker"] == TQ_NODE


def test_flower_pool_grow_and_shrink(
    flower: Flower, own_worker: Callable[[str], tuple[Proc, str]]
) -> None:
    proc, node = own_worker("tqfpool")
    assert celery_stats(node)["pool"]["max-concurrency"] == 2
    reply = flower.post(f"/api/worker/pool/grow/{node}?n=1")
    assert reply == {"message": f"Growing '{node}' worker's pool by 1"}
    wait_for(
        lambda: len(celery_stats(node)["pool"]["processes"]) == 3,
        20.0,
        "the pool to grow to 3",
        proc.log,
    )
    record = flower.worker(node)
    assert record is not None and record["stats"]["pool"]["max-concurrency"] == 3
    reply = flower.post(f"/api/worker/pool/shrink/{node}?n=1")
    assert reply == {"message": f"Shrinking '{node}' worker's pool by 1"}
    wait_for(
        lambda: len(celery_stats(node)["pool"]["processes"]) == 2,
        20.0,
        "the pool to shrink to 2",
        proc.log,
    )
    assert celery_stats(node)["pool"]["max-concurrency"] == 2


def test_flower_rate_limit(flower: Flower, worker: Proc, db: redis.Redis) -> None:
    """Flower's rate-limit endpoint (form fields ``workername``, ``ratelimit``) changes the tq
    worker's limit: with 1/m the second task waits; with 0 it runs."""
    wait_for(lambda: flower.worker(TQ_NODE), FLOWER_START_S, "Flower to know the worker")
    reply = flower.post(
        "/api/task/rate-limit/rc.touch", {"workername": TQ_NODE, "ratelimit": "1/m"}
    )
    assert reply == {"message": "new rate limit set successfully"}
    try:
        registered = (celery_inspect().registered("rate_limit") or {}).get(TQ_NODE, [])
        assert "rc.touch [rate_limit=1/m]" in registered
        first, second = f"f1-{uuid.uuid4()}", f"f2-{uuid.uuid4()}"
        a = celery_app().send_task("rc.touch", args=[first])
        b = celery_app().send_task("rc.touch", args=[second])
        wait_celery_state(a.id, "SUCCESS", 30.0, worker.log)

        def held() -> bool:
            got = celery_inspect().reserved() or {}
            return any(t["id"] == b.id for t in got.get(TQ_NODE, []))

        wait_for(held, 20.0, "the second task to wait on the rate limit", worker.log)
        time.sleep(1.0)
        assert db.get(second) is None
    finally:
        reply = flower.post(
            "/api/task/rate-limit/rc.touch", {"workername": TQ_NODE, "ratelimit": "0"}
        )
    assert reply == {"message": "new rate limit set successfully"}
    wait_celery_state(b.id, "SUCCESS", 30.0, worker.log)
    assert db.get(second) == b"ran"


def test_flower_revoke_with_terminate(
    flower: Flower, own_worker: Callable[[str], tuple[Proc, str]]
) -> None:
    proc, node = own_worker("tqfterm")
    res = celery_app().send_task("rc.sleep", args=[30], queue="tqfterm_q")

    def running() -> bool:
        got = celery_inspect(node).active() or {}
        return any(t["id"] == res.id for t in got.get(node, []))

    wait_for(running, 20.0, "the sleep task to run", proc.log)
    started = time.monotonic()
    reply = flower.post(f"/api/task/revoke/{res.id}?terminate=true")
    assert reply == {"message": f"Revoked '{res.id}'"}
    wait_celery_state(res.id, "REVOKED", 20.0, proc.log)
    # Flower broadcasts to every worker: the module's worker, which does not run the task,
    # may store REVOKED 'revoked' first (Celery 5.7's workers do the same); the worker that
    # kills it then stores 'terminated'.
    wait_for(
        lambda: str(celery_app().AsyncResult(res.id).result) == "terminated",
        20.0,
        "REVOKED 'terminated'",
        proc.log,
    )
    assert time.monotonic() - started < 25.0, "the 30 s task was not cut short"
    wait_for(
        lambda: flower.task(res.id).get("state") == "REVOKED",
        EVENTS_S,
        "Flower to show the task REVOKED",
        flower.proc.log,
    )
    assert flower.task(res.id)["worker"] == node
    wait_for(
        lambda: len(celery_stats(node)["pool"]["processes"]) == 2,
        20.0,
        "the killed child to be replaced",
        proc.log,
    )
