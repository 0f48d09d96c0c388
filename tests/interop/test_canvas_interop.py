"""Canvas across tq and Celery 5.7: workflows sent by tq's client run on a real Celery worker,
workflows sent by Celery's client run on tq workers, one chord's parts are finished by both
kinds of worker at once, and what tq's client puts on Redis is what Celery's client puts
there (ids aside).

Everything happens in db 12 (``TQ_TEST_CANVAS_INTEROP_URL``), flushed when the module starts
and ends, with one queue per role: ``celery`` for the Celery worker (``celery -A
tests.interop.celery_canvas_app worker -P solo``), ``canvas-tq`` for the tq worker fed by
Celery's client (whose app routes its own continuations there too), ``canvas-wire`` for the
message comparisons (no worker consumes it). The module is one xdist group, so its tests run
one after another. Task names are those of ``tests/canvas_tasks.py``; signatures are built by
name, so the clients need no task code.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import celery
import pytest
import redis
from celery import Celery

import tq
from tq import App
from tq.app.canvas import xstarmap
from tq.exceptions import ChordError

pytestmark = [pytest.mark.redis, pytest.mark.interop, pytest.mark.xdist_group("canvas_db12")]

ROOT = Path(__file__).resolve().parents[2]
CELERY_URL = os.environ.get("TQ_TEST_CANVAS_INTEROP_URL", "redis://127.0.0.1:6379/12")
TQ_QUEUE = "canvas-tq"
WIRE_QUEUE = "canvas-wire"
#: Seconds to wait for a workflow's result, and for a worker to answer ping after start.
RESULT_TIMEOUT_S = 30.0
START_TIMEOUT_S = 40.0
NAMES = ("add", "mul", "xsum", "identity", "nap", "fail", "on_error", "on_error_old",
         "xsum_counted")
ERRBACK_KEY = "canvas:errbacks"
HAS_WORKER_CLI = importlib.util.find_spec("tq_console.cli") is not None
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")


# -- processes -------------------------------------------------------------------------------
def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1", **extra)
    return env


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes], deadline_s: float = 15.0) -> None:
    """SIGTERM the process group, SIGKILL what is left after ``deadline_s``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(deadline_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _wait_ready(ping: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if ping():
            return
        time.sleep(0.2)
    pytest.fail(f"worker did not answer ping in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def start_tq_worker(url: str, log: Path, queue: str = "celery"
                    ) -> tuple[subprocess.Popen[bytes], str]:
    """``tq-console --worker -A tests.canvas_tasks:app -P solo -c 1 -Q <queue>`` on ``url``;
    the app's default queue is ``queue`` too, so the continuations it sends stay there."""
    node = f"tqcanvas-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    cmd = [str(Path(sys.executable).parent / "tq-console"), "--worker", "-A",
           "tests.canvas_tasks:app", "-P", "solo", "-c", "1", "-Q", queue, "-n", node]
    env = _env(TQ_TEST_CANVAS_URL=url, TQ_BROKER_URL=url, TQ_RESULT_BACKEND=url,
               TQ_TEST_CANVAS_QUEUE=queue)
    proc = _spawn(cmd, env, log)
    probe = App("canvas_probe", broker=url, backend=url, set_as_current=False)
    try:
        _wait_ready(lambda: node in (probe.control.inspect(destination=[node], timeout=0.5)
                                     .ping() or {}), proc, log)
    except BaseException:
        _stop(proc)
        raise
    finally:
        probe.close()
    return proc, node


def _flushed(url: str) -> redis.Redis:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is not reachable at {url}: {exc}")
        pytest.skip(f"Redis is not reachable at {url}: {exc}")
    client.flushdb()
    return client


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def celery_db() -> Iterator[redis.Redis]:
    client = _flushed(CELERY_URL)
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def celery_worker(celery_db: redis.Redis, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[str]:
    """A real Celery worker (solo) running ``tests.interop.celery_canvas_app`` on db 12."""
    from tests.interop.celery_canvas_app import app as celery_app

    log = tmp_path_factory.mktemp("canvas-celery") / "celery.log"
    node = f"celerycanvas-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    cmd = [sys.executable, "-m", "celery", "-A", "tests.interop.celery_canvas_app", "worker",
           "-P", "solo", "-c", "1", "--without-mingle", "--without-gossip", "-Q", "celery",
           "-n", node, "-l", "info"]
    proc = _spawn(cmd, _env(TQ_TEST_CANVAS_INTEROP_URL=CELERY_URL), log)
    try:
        _wait_ready(lambda: bool(celery_app.control.ping(destination=[node], timeout=0.5)),
                    proc, log)
        yield node
    finally:
        _stop(proc)
        close_celery(celery_app)


@pytest.fixture(scope="module")
def tq_worker(celery_db: redis.Redis, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[str]:
    """A tq worker (solo) on db 12 that consumes and sends on ``canvas-tq``."""
    if not HAS_WORKER_CLI:
        pytest.skip("the tq worker CLI (tq_console.cli) is not importable yet")
    log = tmp_path_factory.mktemp("canvas-tq") / "tq.log"
    proc, node = start_tq_worker(CELERY_URL, log, TQ_QUEUE)
    try:
        yield node
    finally:
        _stop(proc)


class TqClient:
    """A tq App on one database that builds signatures of the canvas tasks by name."""

    def __init__(self, url: str, **settings: Any) -> None:
        self.app = App("canvas_interop", broker=url, backend=url, set_as_current=False,
                       **settings)

    def s(self, name: str, *args: Any, **kwargs: Any) -> tq.Signature:
        return self.app.signature(f"tests.canvas_tasks.{name}", args=args, kwargs=kwargs)

    def si(self, name: str, *args: Any) -> tq.Signature:
        return self.s(name, *args).set(immutable=True)


def close_celery(app: Celery) -> None:
    """Close a Celery client, including the result subscriber that ``app.close()`` leaves.

    Celery's AsyncResult unsubscribes in ``__del__``; on a closed subscriber redis-py would
    open a fresh connection (and leak it). So the subscriber is closed *and* dropped: results
    collected later find none and skip the unsubscribe.
    """
    gc.collect()
    backend = app.backend
    consumer = backend.result_consumer
    with contextlib.suppress(Exception):
        consumer.stop()
    consumer._pubsub = None
    with contextlib.suppress(Exception):
        backend.client.connection_pool.disconnect()
    app.close()


def celery_client(url: str, **conf: Any) -> tuple[Celery, dict[str, Any]]:
    """A Celery app on ``url`` with the canvas task names (their bodies never run here)."""
    app = Celery("canvas_interop_client", broker=url, backend=url, set_as_current=False)
    app.conf.update(broker_connection_retry_on_startup=True, **conf)

    def remote(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("runs on a worker, not in the test")

    tasks = {n: app.task(name=f"tests.canvas_tasks.{n}", shared=False)(remote) for n in NAMES}
    return app, tasks


@pytest.fixture
def tq_on_celery_db(celery_db: redis.Redis) -> Iterator[TqClient]:
    client = TqClient(CELERY_URL)
    yield client
    client.app.close()


@pytest.fixture
def celery_to_tq(celery_db: redis.Redis) -> Iterator[dict[str, Any]]:
    """Celery's client, routing everything to the tq worker's queue."""
    app, tasks = celery_client(CELERY_URL, task_default_queue=TQ_QUEUE)
    yield tasks
    close_celery(app)


def errback_records(client: redis.Redis, ids: set[str], count: int) -> list[dict[str, Any]]:
    """Wait until ``count`` errback records about ``ids`` exist; return those records."""
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while True:
        records = [json.loads(r) for r in client.lrange(ERRBACK_KEY, 0, -1)]
        mine = [r for r in records if r["id"] in ids]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        time.sleep(0.05)


# -- tq client → Celery worker ---------------------------------------------------------------
def test_chain_sent_by_tq_runs_on_a_real_celery_worker(
    celery_worker: str, tq_on_celery_db: TqClient
) -> None:
    t = tq_on_celery_db
    res = (t.s("add", 1, 1) | t.s("add", 10) | t.s("add", 100))()
    assert res.get(timeout=RESULT_TIMEOUT_S) == 112
    assert res.parent.get(timeout=RESULT_TIMEOUT_S) == 12
    assert res.parent.parent.get(timeout=RESULT_TIMEOUT_S) == 2
    assert [c.id for c in res.parent.children or []] == [res.id]


def test_chord_sent_by_tq_runs_on_a_celery_worker_and_get_returns_the_sum(
    celery_worker: str, tq_on_celery_db: TqClient, celery_db: redis.Redis
) -> None:
    t = tq_on_celery_db
    res = tq.chord((t.s("add", i, i) for i in range(20)), t.s("xsum_counted"))()
    assert res.get(timeout=RESULT_TIMEOUT_S) == sum(i + i for i in range(20))
    assert celery_db.get(f"canvas:runs:{res.id}") == b"1"
    assert res.parent.get(timeout=RESULT_TIMEOUT_S) == [i + i for i in range(20)]
    promoted = (tq.group(t.s("add", i, i) for i in range(3)) | t.s("xsum"))()
    assert promoted.get(timeout=RESULT_TIMEOUT_S) == 6


def test_groups_and_builtins_sent_by_tq_run_on_a_celery_worker(
    celery_worker: str, tq_on_celery_db: TqClient
) -> None:
    t = tq_on_celery_db
    assert tq.group(t.s("add", i, i) for i in range(4))().get(timeout=RESULT_TIMEOUT_S) == [
        0, 2, 4, 6]
    starmap = xstarmap(t.s("add"), [(1, 2), (3, 4)], app=t.app)
    assert starmap.delay().get(timeout=RESULT_TIMEOUT_S) == [3, 7]
    parts = tq.chunks(t.s("add"), [(i, i) for i in range(5)], 2, app=t.app)
    assert parts().get(timeout=RESULT_TIMEOUT_S) == [[0, 2], [4, 6], [8]]


def test_chord_failure_on_a_celery_worker_is_a_chord_error_for_tq(
    celery_worker: str, tq_on_celery_db: TqClient, celery_db: redis.Redis
) -> None:
    t = tq_on_celery_db
    body = t.s("xsum").on_error(t.s("on_error"))
    res = tq.chord([t.s("add", 1, 1), t.s("fail", "hdr-fail")], body)()
    with pytest.raises(ChordError, match=r"Dependency .* raised ValueError\('hdr-fail'\)"):
        res.get(timeout=RESULT_TIMEOUT_S, follow_parents=False)
    (record,) = errback_records(celery_db, {res.id}, 1)
    assert record["kind"] == "new" and record["id"] == res.id


# -- Celery client → tq worker ---------------------------------------------------------------
def test_chord_sent_by_celery_runs_on_tq_workers_and_get_returns_the_sum(
    tq_worker: str, celery_to_tq: dict[str, Any], celery_db: redis.Redis
) -> None:
    c = celery_to_tq
    res = celery.chord((c["add"].s(i, i) for i in range(30)), c["xsum_counted"].s())()
    assert res.get(timeout=RESULT_TIMEOUT_S) == sum(i + i for i in range(30))
    assert celery_db.get(f"canvas:runs:{res.id}") == b"1"
    assert (celery.group(c["add"].s(4, 4), c["add"].s(8, 8)) | c["xsum"].s())().get(
        timeout=RESULT_TIMEOUT_S) == 24


def test_chains_and_groups_sent_by_celery_run_on_tq_workers(
    tq_worker: str, celery_to_tq: dict[str, Any]
) -> None:
    c = celery_to_tq
    res = celery.chain(c["add"].s(1, 1), c["add"].s(10), c["add"].s(100)).apply_async()
    assert res.get(timeout=RESULT_TIMEOUT_S) == 112
    assert res.parent.get(timeout=RESULT_TIMEOUT_S) == 12
    mid = celery.chain(c["add"].s(1, 1), celery.group(c["add"].s(1), c["add"].s(2)),
                       c["xsum"].s(), c["add"].s(5)).apply_async()
    assert mid.get(timeout=RESULT_TIMEOUT_S) == 12
    assert celery.group(c["add"].s(i, i) for i in range(3))(  # type: ignore[no-untyped-call]
    ).get(timeout=RESULT_TIMEOUT_S) == [0, 2, 4]
    body = celery.chain(c["xsum"].s(), c["add"].s(1), c["mul"].s(2))
    assert celery.chord([c["add"].s(1, 1), c["add"].s(2, 2)], body)().get(
        timeout=RESULT_TIMEOUT_S) == 14


def test_map_starmap_and_chunks_sent_by_celery_run_on_tq_workers(
    tq_worker: str, celery_to_tq: dict[str, Any]
) -> None:
    c = celery_to_tq
    assert c["xsum"].map([[1, 2], [3]]).delay().get(timeout=RESULT_TIMEOUT_S) == [3, 3]
    assert c["add"].starmap([(1, 2), (3, 4)]).delay().get(timeout=RESULT_TIMEOUT_S) == [3, 7]
    parts = c["add"].chunks([(i, i) for i in range(5)], 2)
    assert parts().get(timeout=RESULT_TIMEOUT_S) == [[0, 2], [4, 6], [8]]


def test_errbacks_sent_by_celery_run_on_tq_workers_in_celerys_two_styles(
    tq_worker: str, celery_to_tq: dict[str, Any], celery_db: redis.Redis
) -> None:
    c = celery_to_tq
    new = c["fail"].apply_async(("new",), link_error=c["on_error"].s())
    old = c["fail"].apply_async(("old",), link_error=c["on_error_old"].s())
    for res in (new, old):
        with pytest.raises(Exception, match=r"new|old"):
            res.get(timeout=RESULT_TIMEOUT_S)
    records = {r["kind"]: r for r in errback_records(celery_db, {new.id, old.id}, 2)}
    assert records["new"]["id"] == new.id and records["new"]["exc"] == "ValueError('new')"
    assert records["old"] == {"kind": "old", "id": old.id}
    failing = celery.chord([c["add"].s(1, 1), c["fail"].s("hdr-fail")], c["xsum"].s())()
    with pytest.raises(Exception, match="hdr-fail"):
        failing.get(timeout=RESULT_TIMEOUT_S)
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while failing.state != "FAILURE" and time.monotonic() < deadline:
        time.sleep(0.05)
    meta = json.loads(celery_db.get(f"celery-task-meta-{failing.id}") or b"{}")
    assert meta["result"]["exc_type"] == "ChordError"
    assert meta["result"]["exc_module"] == "celery.exceptions"


# -- both kinds of worker on one chord -------------------------------------------------------
def test_celery_and_tq_workers_finish_one_chord_together(
    celery_worker: str, tq_on_celery_db: TqClient, celery_db: redis.Redis, tmp_path: Path
) -> None:
    if not HAS_WORKER_CLI:
        pytest.skip("the tq worker CLI (tq_console.cli) is not importable yet")
    t = tq_on_celery_db
    proc, tq_node = start_tq_worker(CELERY_URL, tmp_path / "tq-on-celery-db.log")
    try:
        # Fast parts: the join's claim races between the two kinds of worker.
        res = tq.chord((t.s("add", i, i) for i in range(300)), t.s("xsum_counted"))()
        assert res.get(timeout=120) == sum(i + i for i in range(300))
        assert celery_db.get(f"canvas:runs:{res.id}") == b"1"
        # The joining worker cleans up after sending the body, maybe after the body ran.
        done_key = f"celery-taskset-meta-{res.parent.id}.c"
        deadline = time.monotonic() + RESULT_TIMEOUT_S
        while celery_db.get(done_key) != b"done" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert celery_db.get(done_key) == b"done"
        # Slow parts: both workers certainly take some.
        res = tq.chord((t.s("nap", i, 0.02) for i in range(100)), t.s("xsum_counted"))()
        assert res.get(timeout=120) == sum(range(100))
        assert celery_db.get(f"canvas:runs:{res.id}") == b"1"
        assert {r.worker for r in res.parent.results} == {celery_worker, tq_node}
    finally:
        _stop(proc)


# -- what goes on the wire -------------------------------------------------------------------
def _drain(client: redis.Redis) -> list[Any]:
    raw = list(reversed(client.lrange(WIRE_QUEUE, 0, -1)))
    client.delete(WIRE_QUEUE)
    out = []
    for item in raw:
        envelope = json.loads(item)
        headers = {k: v for k, v in envelope["headers"].items() if k != "origin"}
        props = envelope["properties"]
        out.append({"headers": headers, "body": json.loads(base64.b64decode(envelope["body"])),
                    "delivery_info": props["delivery_info"], "priority": props["priority"]})
    return out


def _norm(value: Any) -> Any:
    ids: dict[str, str] = {}
    text = UUID.sub(lambda mo: ids.setdefault(mo.group(0), f"<id{len(ids)}>"),
                    json.dumps(value, sort_keys=True))
    return json.loads(re.sub(r'"reply_to": "<id\d+>"', '"reply_to": "<oid>"', text))


def _chord_sizes(client: redis.Redis) -> list[tuple[Any, int]]:
    keys = sorted(client.scan_iter("celery-taskset-meta-*.s"))
    out = [(client.get(k), int(client.ttl(k) > 86000)) for k in keys]
    for k in keys:
        client.delete(k)
    return out


WIRE_CASES: dict[str, Callable[[Any, Any, Any, Any], Any]] = {
    "chain": lambda s, si, g, m: m.chain(s("add", 1, 1), s("add", 10), s("add", 100)),
    "chord": lambda s, si, g, m: m.chord([s("add", i, i) for i in range(3)], s("xsum")),
    "group": lambda s, si, g, m: g(s("add", i, i) for i in range(3)),
    "group_pipe_task": lambda s, si, g, m: g(s("add", 1, 1), s("add", 2, 2)) | s("xsum"),
    "chain_with_group": lambda s, si, g, m: m.chain(
        s("add", 1, 1), g(s("add", 1), s("add", 2)), s("xsum"), s("add", 5)),
    "chain_ending_in_group": lambda s, si, g, m: s("add", 1, 1) | g(s("add", 1), s("add", 2)),
    "group_of_chains": lambda s, si, g, m: g(s("add", 1, 1) | s("add", 2), s("add", 3, 3)),
    "chord_chain_body": lambda s, si, g, m: m.chord(
        [s("add", 1, 1), s("add", 2, 2)], s("xsum") | s("add", 1) | s("add", 2)),
    "chord_group_body": lambda s, si, g, m: m.chord(
        [s("add", 1, 1)], g(s("add", 1), s("add", 2))),
    "immutable": lambda s, si, g, m: s("add", 1, 1) | si("add", 5, 5),
    "nested_chain": lambda s, si, g, m: m.chain(
        s("add", 1, 1), m.chain(s("add", 2), s("add", 3)), s("add", 4)),
    "link": lambda s, si, g, m: s("add", 1, 2).set(link=[s("add", 10)],
                                                   link_error=[s("on_error")]),
}


@pytest.mark.parametrize("case", sorted(WIRE_CASES))
def test_tq_client_writes_the_same_messages_and_chord_keys_as_celery(
    case: str, celery_db: redis.Redis
) -> None:
    capp, _ = celery_client(CELERY_URL, task_default_queue=WIRE_QUEUE)
    ours = TqClient(CELERY_URL, task_default_queue=WIRE_QUEUE)
    try:
        celery_db.delete(WIRE_QUEUE)
        _chord_sizes(celery_db)  # forget chord sizes left by earlier tests

        def celery_sig(name: str, *args: Any) -> Any:
            return capp.signature(f"tests.canvas_tasks.{name}", args=args)

        def celery_si(name: str, *args: Any) -> Any:
            return capp.signature(f"tests.canvas_tasks.{name}", args=args, immutable=True)

        WIRE_CASES[case](celery_sig, celery_si, celery.group, celery).apply_async()
        theirs, their_sizes = _drain(celery_db), _chord_sizes(celery_db)
        WIRE_CASES[case](ours.s, ours.si, tq.group, tq).apply_async()
        mine, my_sizes = _drain(celery_db), _chord_sizes(celery_db)
    finally:
        close_celery(capp)
        ours.app.close()
    assert theirs, "Celery sent nothing"
    assert _norm(mine) == _norm(theirs)
    assert my_sizes == their_sizes
