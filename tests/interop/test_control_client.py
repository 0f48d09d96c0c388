"""tq's control client and event receiver against a REAL Celery worker (wire spec 11.4, 5.3).

A ``celery worker -P solo -E`` subprocess (``tests/interop/celery_ctl_app.py``) runs on Redis
db 11 for the whole module; db 11 is flushed before it starts and after it stops, and the
worker is always stopped in the fixture's teardown. Every wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from tq import states
from tq.app.base import App
from tq.app.event_state import ClusterState
from tq.app.events import EventDispatcher, EventReceiver

#: One Celery worker on db 11 per run: keep these tests on one xdist worker (--dist loadgroup).
pytestmark = [pytest.mark.interop, pytest.mark.redis, pytest.mark.xdist_group("celery_db11")]

REPO = Path(__file__).resolve().parents[2]
URL = os.environ.get("TQ_CTL_BROKER", "redis://127.0.0.1:6379/11")
#: Seconds the Celery worker may take to answer its first ping.
STARTUP_TIMEOUT_S = 45.0
T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None], timeout: float, what: str, log: Path | None = None
) -> T:
    """Call ``probe`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{tail}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        client.close()
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {URL} is not reachable: {exc}")
        pytest.skip(f"Redis at {URL} is not reachable: {exc}")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def tq_app(broker: redis.Redis) -> Iterator[App]:
    app = App(broker=URL, backend=URL, set_as_current=False)
    yield app
    app.close()


@contextlib.contextmanager
def celery_worker(app: App, log: Path, name: str, *args: str) -> Iterator[str]:
    """Run ``celery worker -n <name>@%h <args>``; yields its node name once it answers ping,
    and always stops it (SIGTERM, then SIGKILL after 15 s)."""
    env = {
        **os.environ,
        "TQ_CTL_BROKER": URL,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tests.interop.celery_ctl_app",
        "worker",
        "-n",
        f"{name}@%h",
        "-E",
        "-l",
        "info",
        "--without-mingle",
        "--without-gossip",
        *args,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:

        def ready() -> str | None:
            if proc.poll() is not None:
                pytest.fail(f"celery worker exited with {proc.returncode}\n{log.read_text()}")
            got = app.control.inspect(timeout=0.5).ping() or {}
            return next((n for n in got if n.startswith(f"{name}@")), None)

        yield wait_for(ready, STARTUP_TIMEOUT_S, f"celery worker {name} to answer ping", log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def celery_node(
    broker: redis.Redis, tq_app: App, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """The module's Celery worker (solo pool, events on); yields ``(node name, log file)``."""
    log = tmp_path_factory.mktemp("celery") / "worker.log"
    with celery_worker(tq_app, log, "celeryw", "-P", "solo", "-c", "1") as node:
        yield node, log


def reply_keys(broker: redis.Redis) -> list[bytes | str]:
    """Reply-queue lists and binding sets left in the broker db."""
    return list(broker.keys("*reply.celery.pidbox*"))


def test_ping_gets_the_celery_workers_pong(
    tq_app: App, celery_node: tuple[str, Path], broker: redis.Redis
) -> None:
    node, _ = celery_node
    assert tq_app.control.inspect().ping() == {node: {"ok": "pong"}}
    assert tq_app.control.ping(destination=[node]) == [{node: {"ok": "pong"}}]
    # A destination that is not this worker gets no answer from it.
    assert tq_app.control.inspect(destination=["nobody@nowhere"], timeout=0.5).ping() is None
    assert tq_app.control.inspect(pattern="celeryw@*").ping() == {node: {"ok": "pong"}}
    assert tq_app.control.inspect(pattern="^nope", matcher="pcre", timeout=0.5).ping() is None
    assert reply_keys(broker) == [], "the reply queue and its binding must be deleted"


def test_stats_registered_and_active_queues_parse(
    tq_app: App, celery_node: tuple[str, Path]
) -> None:
    node, _ = celery_node
    inspect = tq_app.control.inspect(destination=[node])
    stats = inspect.stats()
    assert stats is not None
    assert {"total", "pid", "pool", "broker", "prefetch_count", "uptime", "clock"} <= set(
        stats[node]
    )
    registered = inspect.registered()
    assert registered is not None
    assert {"ctl.add", "ctl.sleep", "ctl.touch"} <= set(registered[node])
    queues = inspect.active_queues()
    assert queues is not None
    assert "celery" in [q["name"] for q in queues[node]]
    assert queues[node][0]["exchange"]["type"] == "direct"
    conf = inspect.conf()
    assert conf is not None and isinstance(conf[node], dict)


def test_inspect_active_lists_a_running_task(
    tq_app: App, celery_node: tuple[str, Path], tmp_path: Path
) -> None:
    node, _ = celery_node
    assert tq_app.control.inspect(destination=[node]).active() == {node: []}
    # A solo worker cannot answer while it runs a task: use a threads worker on its own queue.
    log = tmp_path / "threads.log"
    with celery_worker(
        tq_app, log, "celeryt", "-P", "threads", "-c", "2", "-Q", "ctl_threads"
    ) as threads_node:
        result = tq_app.send_task("ctl.sleep", (3.0,), queue="ctl_threads")

        def running() -> list[dict[str, Any]] | None:
            got = tq_app.control.inspect(destination=[threads_node], timeout=0.5).active() or {}
            return [t for t in got.get(threads_node, []) if t["id"] == result.id] or None

        (info,) = wait_for(running, 10.0, "the task to show in inspect active", log)
        assert (info["name"], info["args"], info["kwargs"]) == ("ctl.sleep", [3.0], {})
        assert info["hostname"] == threads_node and info["acknowledged"] is True
        assert info["delivery_info"]["routing_key"] == "ctl_threads"
        safe = tq_app.control.inspect(destination=[threads_node]).active(safe=True) or {}
        entries = [t for t in safe.get(threads_node, []) if t["id"] == result.id]
        assert [e["args"] for e in entries] in ([], ["(3.0,)"])  # [] if it just finished
        assert result.get(timeout=10) == 3.0


def test_revoke_of_a_countdown_task_keeps_celery_from_running_it(
    tq_app: App, celery_node: tuple[str, Path], broker: redis.Redis
) -> None:
    node, log = celery_node
    marker = f"ran-{uuid.uuid4()}"
    result = tq_app.send_task("ctl.touch", (marker,), countdown=3)

    def scheduled() -> bool:
        got = tq_app.control.inspect(destination=[node], timeout=0.5).scheduled() or {}
        return any(e["request"]["id"] == result.id for e in got.get(node, []))

    wait_for(scheduled, 10.0, "the worker to hold the countdown task", log)
    tq_app.control.revoke(result.id)
    revoked = tq_app.control.inspect(destination=[node]).revoked() or {}
    assert result.id in revoked.get(node, [])
    score = broker.zscore(tq_app.transport.keys.revoked, result.id)
    assert score is not None and score > time.time() + 3600
    wait_for(lambda: result.state == states.REVOKED, 10.0, "REVOKED in the backend", log)
    time.sleep(4.0)  # past the countdown: the worker discards it instead of running it
    assert broker.get(marker) is None
    assert "Discarding revoked task" in log.read_text()


def test_rate_limit_and_unknown_commands_are_answered(
    tq_app: App, celery_node: tuple[str, Path]
) -> None:
    node, _ = celery_node
    assert tq_app.control.rate_limit("ctl.add", "10/s", reply=True) == [
        {node: {"ok": "new rate limit set successfully"}}
    ]
    assert tq_app.control.broadcast("no_such_cmd", reply=True) == [
        {node: {"error": "KeyError('no_such_cmd')"}}
    ]


def test_event_receiver_captures_celery_events_and_cluster_state_folds_them(
    tq_app: App, celery_node: tuple[str, Path]
) -> None:
    node, log = celery_node
    state = ClusterState()
    seen: list[dict[str, Any]] = []
    heard = threading.Event()
    task_id = str(uuid.uuid4())

    def on_event(ev: dict[str, Any]) -> None:
        seen.append(ev)
        state.event(ev)
        if ev["type"] == "worker-heartbeat" and ev.get("hostname") == node:
            heard.set()
        if ev["type"] == "task-succeeded" and ev.get("uuid") == task_id:
            receiver.stop()

    receiver = EventReceiver(tq_app, callback=on_event)
    thread = threading.Thread(target=receiver.capture, kwargs={"timeout": 20.0}, daemon=True)
    thread.start()
    try:
        assert heard.wait(10.0), "no worker-heartbeat (the wake-up should trigger one)"
        tq_app.send_task("ctl.add", (2, 3), task_id=task_id)
        thread.join(15.0)
        assert not thread.is_alive(), f"no task-succeeded for {task_id}\n{log.read_text()[-2000:]}"
    finally:
        receiver.stop()
        thread.join(5.0)
    types = [e["type"] for e in seen if e.get("uuid") == task_id]
    assert types == ["task-received", "task-started", "task-succeeded"]
    assert all("local_received" in e for e in seen)
    task = state.task(task_id)
    assert task is not None
    assert (task.state, task.name, task.args, task.result, task.worker) == (
        states.SUCCESS,
        "ctl.add",
        "(2, 3)",
        "5",
        node,
    )
    worker = state.worker(node)
    assert worker is not None and worker.online and worker.sw_ident == "py-celery"


def test_celerys_receiver_reads_tq_dispatcher_events(tq_app: App, broker: redis.Redis) -> None:
    from tests.interop.celery_ctl_app import app as celery_app

    got: list[dict[str, Any]] = []
    done = threading.Event()
    receivers: list[Any] = []

    def on_event(ev: dict[str, Any]) -> None:
        if ev.get("hostname") != "tqdisp@test":
            return
        got.append(ev)
        if {"worker-heartbeat", "task-succeeded"} <= {e["type"] for e in got}:
            done.set()
            receivers[0].should_stop = True

    def run() -> None:
        with celery_app.connection_for_read() as conn:
            receivers.append(celery_app.events.Receiver(conn, handlers={"*": on_event}))
            with contextlib.suppress(TimeoutError):
                receivers[0].capture(limit=None, timeout=15, wakeup=False)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    dispatcher = EventDispatcher(tq_app, hostname="tqdisp@test")
    deadline = time.monotonic() + 15
    while not done.is_set() and time.monotonic() < deadline:
        # Celery's receiver subscribes asynchronously: repeat until it has seen a batch.
        dispatcher.send("worker-heartbeat", freq=2.0, active=0, processed=0)
        dispatcher.send_batch(
            [
                dispatcher.event("task-received", uuid="x", name="n", args="()", kwargs="{}"),
                {"type": "task-started", "uuid": "x"},  # a plain dict gets the common fields
                dispatcher.event("task-succeeded", uuid="x", result="1", runtime=0.1),
            ]
        )
        done.wait(0.5)
    thread.join(5.0)
    assert done.is_set(), "Celery's EventReceiver never saw tq's task.multi batch"
    assert {"worker-heartbeat", "task-received", "task-started", "task-succeeded"} <= {
        e["type"] for e in got
    }
    started = next(e for e in got if e["type"] == "task-started")
    assert list(started)[:4] == ["hostname", "utcoffset", "pid", "clock"]
    assert isinstance(started["clock"], int) and started["timestamp"] > 0


def test_broadcast_nobody_hears_returns_at_once_and_leaves_nothing(broker: redis.Redis) -> None:
    app = App(broker=URL, control_exchange="tq_nobody", set_as_current=False)
    try:
        started = time.monotonic()
        assert app.control.inspect(timeout=5.0).ping() is None
        assert time.monotonic() - started < 2.0, "no subscriber: no need to wait the timeout"
        assert app.control.heartbeat() == []
        assert list(broker.keys("*tq_nobody*")) == []
    finally:
        app.close()


def test_purge_deletes_ready_messages_of_the_default_queue(broker: redis.Redis) -> None:
    app = App(broker=URL, task_default_queue="ctl_purge", set_as_current=False)
    try:
        for i in range(3):
            app.send_task("ctl.add", (i, i), priority=3 * i)
        assert app.control.purge() == 3
        assert app.transport.queue_length("ctl_purge") == 0
    finally:
        app.close()


def test_event_receiver_survives_bad_payloads(
    tq_app: App, broker: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    good = EventDispatcher(tq_app, hostname="good@test")
    channel = tq_app.transport.keys.fanout_channel("celeryev", "task.multi")
    bad = [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"body": "e30=", "content-type": "application/json"}',
        json.dumps(
            {
                "body": "gAR9lC4=",
                "content-type": "application/x-python-serialize",
                "headers": {},
                "properties": {"body_encoding": "base64"},
            }
        ).encode(),
        json.dumps(
            {
                "body": base64.b64encode(b'[5, {"no": "type"}]').decode(),
                "content-type": "application/json",
                "headers": {},
                "properties": {"body_encoding": "base64"},
            }
        ).encode(),
    ]
    got: list[dict[str, Any]] = []
    receiver = EventReceiver(tq_app, callback=got.append)

    def feed() -> None:
        deadline = time.monotonic() + 10
        # Bad payloads first, once the receiver is subscribed; then one good event.
        while broker.publish(channel, b"") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        for payload in bad:
            broker.publish(channel, payload)
        good.send("worker-heartbeat", freq=2.0)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    events = list(receiver.itercapture(limit=1, timeout=10.0, wakeup=False))
    thread.join(12)
    assert [e["hostname"] for e in events] == ["good@test"]
    assert got == events
    assert caplog.text.count("Ignoring an unreadable event message") >= len(bad) - 1
