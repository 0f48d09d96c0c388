"""Canvas on real Redis with tq workers: the examples of Celery's canvas guide, a 1000-part
chord whose body runs exactly once, failures reaching errbacks, the result API (children,
collect, streaming ``get``, extended fields) -- and the chord join itself, driven directly
against Redis as racing workers would.

Database: ``tests.canvas_tasks.URL`` (``TQ_TEST_CANVAS_URL``, default db 13), flushed when the
module starts and ends; the module is one xdist group. Two worker subprocesses (``tq-console
--worker -A tests.canvas_tasks:app``, ``-P solo -c 1`` and ``-P prefork -c 2``) serve the
whole module; tests use fresh ids, so they need no flush in between. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from tests import canvas_tasks as ct

from tq import GroupResult, chain, chord, group, states
from tq.app.context import Request
from tq.app.workflow import chord_part_return
from tq.backend.chord import ChordPart, ChordSettings, on_chord_part_return, set_chord_size
from tq.exceptions import ChordError

pytestmark = [pytest.mark.redis, pytest.mark.xdist_group("canvas_db13")]

ROOT = Path(__file__).resolve().parents[2]
#: Seconds to wait for any single workflow result.
RESULT_TIMEOUT_S = 30.0
#: Seconds a worker subprocess gets to answer ping after start.
START_TIMEOUT_S = 30.0
HAS_WORKER_CLI = importlib.util.find_spec("tq_console.cli") is not None
needs_worker = pytest.mark.skipif(
    not HAS_WORKER_CLI, reason="the tq worker CLI (tq_console.cli) is not importable yet"
)


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def canvas_redis() -> Iterator[redis.Redis]:
    """The canvas database, flushed before and after the module."""
    client = redis.Redis.from_url(ct.URL, socket_connect_timeout=2, socket_timeout=10)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis is not reachable at {ct.URL}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def worker_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(TQ_TEST_CANVAS_URL=url, TQ_BROKER_URL=url, TQ_RESULT_BACKEND=url,
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1")
    return env


def start_tq_worker(url: str, log: Path, pool: str = "solo", concurrency: int = 1
                    ) -> tuple[subprocess.Popen[bytes], str]:
    node = f"canvas-{pool}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    cmd = [str(Path(sys.executable).parent / "tq-console"), "--worker", "-A",
           "tests.canvas_tasks:app", "-P", pool, "-c", str(concurrency), "-Q", "celery",
           "-n", node]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=worker_env(url), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return proc, node


def wait_for_tq_ping(app: Any, node: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        replies = app.control.inspect(destination=[node], timeout=0.5).ping()
        if replies and node in replies:
            return
    pytest.fail(f"{node} did not answer ping in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def stop_process(proc: subprocess.Popen[bytes], deadline_s: float = 15.0) -> None:
    """SIGTERM the worker's process group, SIGKILL what is left after ``deadline_s``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(deadline_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


@pytest.fixture(scope="module")
def tq_workers(canvas_redis: redis.Redis, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[list[str]]:
    """Two tq workers on the canvas database (solo; prefork with two children), so chord
    parts race between processes."""
    if not HAS_WORKER_CLI:
        pytest.skip("the tq worker CLI (tq_console.cli) is not importable yet")
    logs = tmp_path_factory.mktemp("canvas-workers")
    started = []
    try:
        for n, (pool, concurrency) in enumerate((("solo", 1), ("prefork", 2))):
            log = logs / f"{pool}-{n}.log"
            proc, node = start_tq_worker(ct.URL, log, pool, concurrency)
            started.append((proc, node))
            wait_for_tq_ping(ct.app, node, proc, log)
        yield [node for _, node in started]
    finally:
        for proc, _ in started:
            stop_process(proc)


def errback_records(client: redis.Redis, ids: set[str], count: int) -> list[dict[str, Any]]:
    """Wait until ``count`` errback records about ``ids`` exist; return those records."""
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while True:
        records = [json.loads(r) for r in client.lrange(ct.ERRBACK_KEY, 0, -1)]
        mine = [r for r in records if r["id"] in ids]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        time.sleep(0.05)


@pytest.fixture
def errbacks(canvas_redis: redis.Redis) -> redis.Redis:
    """The client to read errback records with (they are told apart by task id)."""
    return canvas_redis


# -- the canvas guide, on tq workers ---------------------------------------------------------
@needs_worker
def test_chain_passes_each_result_on_and_parents_lead_back_to_the_first(
    tq_workers: list[str],
) -> None:
    res = (ct.add.s(2, 2) | ct.add.s(4) | ct.add.s(8))()
    assert res.get(timeout=RESULT_TIMEOUT_S) == 16
    assert res.parent.get(timeout=RESULT_TIMEOUT_S) == 8
    assert res.parent.parent.get(timeout=RESULT_TIMEOUT_S) == 4
    assert res.parent.parent.parent is None
    res = chain(ct.add.s(4, 4), ct.mul.s(8), ct.mul.s(10))()
    assert res.get(timeout=RESULT_TIMEOUT_S) == 640


@needs_worker
def test_partial_chains_and_groups_take_the_call_arguments(tq_workers: list[str]) -> None:
    assert chain(ct.add.s(1), ct.add.s(2))(10).get(timeout=RESULT_TIMEOUT_S) == 13
    assert group(ct.add.s(1), ct.add.s(2))(10).get(timeout=RESULT_TIMEOUT_S) == [11, 12]
    assert (ct.add.s(1, 1) | ct.add.si(5, 5))().get(timeout=RESULT_TIMEOUT_S) == 10
    assert ~ct.add.s(2, 2) == 4


@needs_worker
def test_group_result_can_be_read_saved_and_restored(tq_workers: list[str]) -> None:
    res = group(ct.add.s(i, i) for i in range(10))()
    assert res.get(timeout=RESULT_TIMEOUT_S) == [i + i for i in range(10)]
    assert res.ready() and res.successful() and not res.failed()
    assert res.completed_count() == 10
    assert [r.get(timeout=1) for r in res.results] == res.join(timeout=RESULT_TIMEOUT_S)
    res.save()
    restored = GroupResult.restore(res.id, app=ct.app)
    assert restored is not None
    assert [r.id for r in restored.results] == [r.id for r in res.results]
    res.delete()
    assert GroupResult.restore(res.id, app=ct.app) is None
    failing = group(ct.add.s(1, 1), ct.fail.s("boom"))()
    with pytest.raises(ValueError, match="boom"):
        failing.get(timeout=RESULT_TIMEOUT_S)
    assert failing.failed() and failing.completed_count() == 1


@needs_worker
def test_chord_calls_the_body_with_the_header_results_in_order(tq_workers: list[str]) -> None:
    assert chord(ct.add.s(i, i) for i in range(10))(ct.xsum.s()).get(
        timeout=RESULT_TIMEOUT_S) == 90
    res = (group(ct.add.s(i, i) for i in range(5)) | ct.identity.s())()
    assert res.get(timeout=RESULT_TIMEOUT_S) == [0, 2, 4, 6, 8]
    assert isinstance(res.parent, GroupResult)
    assert res.parent.get(timeout=RESULT_TIMEOUT_S) == [0, 2, 4, 6, 8]


@needs_worker
def test_chains_with_groups_inside_become_chords(tq_workers: list[str]) -> None:
    res = (ct.add.s(4, 4) | group(ct.add.si(2, 2), ct.add.si(4, 4)) | ct.xsum.s())()
    assert res.get(timeout=RESULT_TIMEOUT_S) == 12
    res = chain(ct.add.s(1, 1), group(ct.add.s(1), ct.add.s(2)), ct.xsum.s(), ct.add.s(5))()
    assert res.get(timeout=RESULT_TIMEOUT_S) == 12
    ends_in_group = (ct.add.s(1, 1) | group(ct.add.s(1), ct.add.s(2)))()
    assert ends_in_group.get(timeout=RESULT_TIMEOUT_S) == [3, 4]


@needs_worker
def test_chord_bodies_can_be_chains_and_groups(tq_workers: list[str]) -> None:
    body = ct.xsum.s() | ct.add.s(1) | ct.mul.s(2)
    assert chord([ct.add.s(1, 1), ct.add.s(2, 2)], body)().get(timeout=RESULT_TIMEOUT_S) == 14
    res = chord([ct.add.s(1, 1), ct.add.s(2, 2)], group(ct.xsum.s(), ct.identity.s()))()
    assert res.get(timeout=RESULT_TIMEOUT_S) == [6, [2, 4]]


@needs_worker
def test_a_chord_whose_header_part_expired_fails_instead_of_waiting_for_ever(
    tq_workers: list[str],
) -> None:
    # The worker discards the expired part without running it; the chord must still count
    # it and fail its body (Celery: "Dependency ... raised TaskRevokedError('expired')").
    past = datetime.now(UTC) - timedelta(minutes=5)
    res = chord([ct.add.s(1, 1), ct.add.s(2, 2).set(expires=past)], ct.xsum.s())()
    with pytest.raises(ChordError, match=r"Dependency .* raised TaskRevokedError"):
        res.get(timeout=RESULT_TIMEOUT_S, follow_parents=False)


@needs_worker
def test_link_callbacks_get_the_result_and_are_the_parents_children(
    tq_workers: list[str],
) -> None:
    res = ct.add.apply_async((2, 2), link=ct.add.s(16))
    assert res.get(timeout=RESULT_TIMEOUT_S) == 4
    (child,) = res.children or []
    assert child.get(timeout=RESULT_TIMEOUT_S) == 20
    sig = ct.add.s(1, 1)
    sig.link(ct.mul.s(10))
    sig.link(ct.identity.s())
    res = sig.delay()
    assert res.get(timeout=RESULT_TIMEOUT_S) == 2
    (callbacks,) = res.children or []  # several callbacks go out as one group
    assert isinstance(callbacks, GroupResult)
    assert callbacks.get(timeout=RESULT_TIMEOUT_S) == [20, 2]


@needs_worker
def test_map_starmap_and_chunks_run_as_celerys_builtin_tasks(tq_workers: list[str]) -> None:
    assert ct.xsum.map([[1, 2], [3], []]).delay().get(timeout=RESULT_TIMEOUT_S) == [3, 3, 0]
    assert ct.add.starmap(zip(range(5), range(5), strict=True)).delay().get(
        timeout=RESULT_TIMEOUT_S) == [0, 2, 4, 6, 8]
    parts = ct.add.chunks(zip(range(10), range(10), strict=True), 4)
    assert parts().get(timeout=RESULT_TIMEOUT_S) == [[0, 2, 4, 6], [8, 10, 12, 14], [16, 18]]
    assert parts.group().skew(start=0, step=0.01)().get(timeout=RESULT_TIMEOUT_S)[2] == [16, 18]


@needs_worker
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_chord_of_1000_header_tasks_runs_its_body_exactly_once(
    tq_workers: list[str], canvas_redis: redis.Redis
) -> None:
    res = chord((ct.add.s(i, i) for i in range(1000)), ct.xsum_counted.s())()
    assert res.get(timeout=240) == sum(i + i for i in range(1000))
    assert canvas_redis.get(f"canvas:runs:{res.id}") == b"1"
    backend = ct.app.backend
    assert backend is not None
    gid = res.parent.id
    # The joining worker cleans up after sending the body, maybe after the body ran.
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while canvas_redis.get(backend.chord_key(gid, ".c")) != b"done":
        assert time.monotonic() < deadline, "the chord was not cleaned up"
        time.sleep(0.05)
    for part in (".s", ".t", ".j", ".d"):
        assert not canvas_redis.exists(backend.chord_key(gid, part))
    time.sleep(0.5)  # nothing may run the body a second time after the chord finished
    assert canvas_redis.get(f"canvas:runs:{res.id}") == b"1"


# -- failures --------------------------------------------------------------------------------
@needs_worker
def test_header_failure_fails_the_body_and_reaches_its_errbacks(
    tq_workers: list[str], errbacks: redis.Redis
) -> None:
    body = ct.xsum.s()
    body.link_error(ct.on_error.s())
    body.link_error(ct.on_error_old.s())
    res = chord([ct.add.s(1, 1), ct.fail.s("hdr-fail")], body)()
    with pytest.raises((ChordError, ValueError)):
        res.get(timeout=RESULT_TIMEOUT_S)
    with pytest.raises(ChordError, match=r"Dependency .* raised ValueError\('hdr-fail'\)"):
        res.get(timeout=RESULT_TIMEOUT_S, follow_parents=False)
    meta = ct.app.backend.get_meta(res.id)  # type: ignore[union-attr]
    assert meta["result"]["exc_module"] == "celery.exceptions"
    records = errback_records(errbacks, {res.id}, 2)
    assert {r["kind"] for r in records} == {"new", "old"}
    assert all(r["id"] == res.id for r in records)
    new = next(r for r in records if r["kind"] == "new")
    assert new["exc"].startswith("ChordError(")


@needs_worker
def test_errbacks_new_style_run_in_the_worker_and_old_style_are_sent(
    tq_workers: list[str], errbacks: redis.Redis
) -> None:
    new = ct.fail.apply_async(("new-style",), link_error=ct.on_error.s())
    old = ct.fail.apply_async(("old-style",), link_error=ct.on_error_old.s())
    for res in (new, old):
        with pytest.raises(ValueError):
            res.get(timeout=RESULT_TIMEOUT_S)
    records = {r["kind"]: r for r in errback_records(errbacks, {new.id, old.id}, 2)}
    assert records["new"] == {"kind": "new", "id": new.id, "exc": "ValueError('new-style')",
                              "has_tb": True}
    assert records["old"] == {"kind": "old", "id": old.id}


@needs_worker
def test_a_failure_stops_the_chain_and_fails_the_steps_after_it(tq_workers: list[str]) -> None:
    res = chain(ct.add.s(1, 1), ct.fail.s(), ct.add.s(3), ct.add.s(4))()
    with pytest.raises(ValueError):  # raised from the failed parent, maybe before the rest
        res.get(timeout=RESULT_TIMEOUT_S)
    with pytest.raises(ValueError):  # the last step itself is stored as failed too
        res.get(timeout=RESULT_TIMEOUT_S, follow_parents=False)
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while res.parent.state != states.FAILURE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert res.state == res.parent.state == states.FAILURE
    assert res.parent.parent.state == states.FAILURE
    assert res.parent.parent.parent.get(timeout=1) == 2


# -- results ---------------------------------------------------------------------------------
@needs_worker
def test_get_on_message_streams_every_progress_update(tq_workers: list[str]) -> None:
    seen: list[tuple[str, Any]] = []
    res = ct.progress.delay(4, 0.1)
    value = res.get(timeout=RESULT_TIMEOUT_S,
                    on_message=lambda meta: seen.append((meta["status"], meta["result"])))
    assert value == 4
    assert seen[-1] == (states.SUCCESS, 4)
    progress = [r for s, r in seen if s == "PROGRESS"]
    assert progress == sorted(progress, key=lambda r: r["i"])
    assert len(progress) >= 2


@needs_worker
def test_children_and_collect_follow_what_a_task_sent(tq_workers: list[str]) -> None:
    res = ct.spawn.delay(3)
    ids = res.get(timeout=RESULT_TIMEOUT_S)
    assert [c.id for c in res.children or []] == ids
    collected = list(res.collect(timeout=RESULT_TIMEOUT_S))
    assert [value for _, value in collected] == [ids, 0, 2, 4]


@needs_worker
def test_extended_results_name_the_task_its_arguments_and_worker(
    tq_workers: list[str],
) -> None:
    res = ct.add.apply_async((20, 22))
    assert res.get(timeout=RESULT_TIMEOUT_S) == 42
    assert res.name == "tests.canvas_tasks.add"
    assert res.args == [20, 22] and res.kwargs == {}
    assert res.worker in tq_workers
    assert res.queue == "celery"
    assert res.retries == 0


# -- the chord join on Redis, as racing workers drive it ------------------------------------
def _part(gid: str, index: int, state: str = states.SUCCESS, value: Any = None) -> ChordPart:
    return ChordPart(gid, f"{gid}-part-{index}", index, state,
                     index * 10 if value is None else value)


def _join(parts: list[ChordPart]) -> tuple[list[list[Any]], list[ChordError]]:
    """Return ``parts`` one by one; what was dispatched and what failed."""
    sent: list[list[Any]] = []
    failed: list[ChordError] = []
    backend = ct.app.backend
    assert backend is not None
    for part in parts:
        on_chord_part_return(backend, part, ChordSettings.from_conf(ct.app.conf), sent.append,
                             failed.append)
    return sent, failed


def test_a_redelivered_part_counts_once(canvas_redis: redis.Redis) -> None:
    gid = str(uuid.uuid4())
    backend = ct.app.backend
    assert backend is not None
    set_chord_size(backend, gid, 3, 60)
    sent, failed = _join([_part(gid, 0), _part(gid, 0, value=999), _part(gid, 1)])
    assert sent == [] and failed == []
    assert canvas_redis.zcard(backend.chord_key(gid, ".j")) == 2
    sent, failed = _join([_part(gid, 2)])
    assert sent == [[0, 10, 20]] and failed == []
    assert _join([_part(gid, 2), _part(gid, 1)]) == ([], [])  # late copies after "done"
    assert canvas_redis.get(backend.chord_key(gid, ".c")) == b"done"


def test_of_workers_racing_on_the_last_parts_only_one_sends_the_body(
    canvas_redis: redis.Redis,
) -> None:
    gid, size, threads = str(uuid.uuid4()), 200, 8
    backend = ct.app.backend
    assert backend is not None
    set_chord_size(backend, gid, size, 60)
    parts = [_part(gid, i) for i in range(size)]
    sent: list[list[Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker(mine: list[ChordPart]) -> None:
        def dispatch(values: list[Any]) -> None:
            with lock:
                sent.append(values)

        start.wait(10)
        for part in mine:  # every part is returned twice, by two "workers"
            on_chord_part_return(backend, part, ChordSettings.from_conf(ct.app.conf), dispatch,
                                 lambda exc: pytest.fail(f"chord failed: {exc}"))

    slices = [parts[i::threads // 2] for i in range(threads // 2)] * 2
    pool = [threading.Thread(target=worker, args=(s,), name=f"test-part-{n}")
            for n, s in enumerate(slices)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    assert sent == [[i * 10 for i in range(size)]]


def test_a_failed_part_fails_the_body_once_and_drops_the_size(canvas_redis: redis.Redis) -> None:
    gid = str(uuid.uuid4())
    backend = ct.app.backend
    assert backend is not None
    set_chord_size(backend, gid, 2, 60)
    bad = _part(gid, 1, states.FAILURE, ValueError("nope"))
    sent, failed = _join([_part(gid, 0), bad])
    assert sent == []
    (error,) = failed
    assert str(error) == f"Dependency {bad.task_id} raised ValueError('nope')"
    assert not canvas_redis.exists(backend.chord_key(gid, ".s"))
    assert _join([bad]) == ([], [])  # a late copy does not fail it again


def test_chord_part_return_stores_the_chord_error_for_the_body(
    canvas_redis: redis.Redis,
) -> None:
    gid, body_id = str(uuid.uuid4()), str(uuid.uuid4())
    backend = ct.app.backend
    assert backend is not None
    body = ct.xsum.s().set(task_id=body_id, group_id=gid)
    set_chord_size(backend, gid, 1, 60)
    request = Request(id=str(uuid.uuid4()), group=gid, group_index=0, chord=dict(body),
                      called_directly=False)
    chord_part_return(ct.app, request, states.FAILURE, KeyError("k"))
    meta = backend.get_meta(body_id)
    assert meta["status"] == states.FAILURE
    assert meta["result"] == {"exc_type": "ChordError", "exc_module": "celery.exceptions",
                              "exc_message": [f"Dependency {request.id} raised KeyError('k')"]}


def test_set_chord_size_forgets_an_old_claim(canvas_redis: redis.Redis) -> None:
    gid = str(uuid.uuid4())
    backend = ct.app.backend
    assert backend is not None
    canvas_redis.set(backend.chord_key(gid, ".c"), "done")
    set_chord_size(backend, gid, 1, 60)
    assert not canvas_redis.exists(backend.chord_key(gid, ".c"))
    assert canvas_redis.get(backend.chord_key(gid, ".s")) == b"1"
    assert 0 < canvas_redis.ttl(backend.chord_key(gid, ".s")) <= 60
    assert _join([_part(gid, 0)]) == ([[0]], [])
