"""ClusterState (tq.app.event_state): folding events into worker and task views. Pure."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tq import states
from tq.app.event_state import ClusterState, TaskView, WorkerView
from tq.clock import FakeClock
from tq.protocol.events import parse_event_message

CAPTURES = Path(
    os.environ.get("TQ_CAPTURES", Path(__file__).resolve().parents[1] / "captures")
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_800_000_000.0)


@pytest.fixture
def state(clock: FakeClock) -> ClusterState:
    return ClusterState(now=clock.time)


def ev(type: str, clock: FakeClock, **fields: Any) -> dict[str, Any]:
    """An event as EventReceiver yields it (``local_received`` = now on ``clock``)."""
    out: dict[str, Any] = {
        "hostname": "w1@lab",
        "utcoffset": 0.0,
        "pid": 10,
        "clock": 1,
        "timestamp": clock.time(),
        "local_received": clock.time(),
        "type": type,
    }
    out.update(fields)
    return out


def heartbeat(clock: FakeClock, **fields: Any) -> dict[str, Any]:
    base = {
        "freq": 2.0,
        "active": 1,
        "processed": 7,
        "loadavg": [0.5, 0.25, 0.1],
        "sw_ident": "py-celery",
        "sw_ver": "5.7.0",
        "sw_sys": "Linux",
    }
    base.update(fields)
    return ev("worker-heartbeat", clock, **base)


# -- workers ----------------------------------------------------------------------------------
def test_heartbeat_makes_a_worker_online_with_its_fields(
    state: ClusterState, clock: FakeClock
) -> None:
    state.event(heartbeat(clock))
    (worker,) = state.workers()
    assert worker == WorkerView(
        hostname="w1@lab",
        online=True,
        last_heartbeat=clock.time(),
        freq=2.0,
        pid=10,
        active=1,
        processed=7,
        loadavg=(0.5, 0.25, 0.1),
        sw_ident="py-celery",
        sw_ver="5.7.0",
        sw_sys="Linux",
        clock=1,
        last_seen=clock.time(),
    )


def test_worker_goes_offline_after_two_heartbeat_intervals(
    state: ClusterState, clock: FakeClock
) -> None:
    state.event(heartbeat(clock, freq=2.0))
    clock.advance(3.9)
    assert state.worker("w1@lab").online  # type: ignore[union-attr]
    clock.advance(0.2)
    assert not state.worker("w1@lab").online  # type: ignore[union-attr]
    assert state.alive_workers() == []
    state.event(heartbeat(clock))
    assert [w.hostname for w in state.alive_workers()] == ["w1@lab"]


def test_worker_offline_event_ends_liveness_at_once(state: ClusterState, clock: FakeClock) -> None:
    state.event(ev("worker-online", clock, freq=2.0))
    assert state.worker("w1@lab").online  # type: ignore[union-attr]
    state.event(ev("worker-offline", clock))
    view = state.worker("w1@lab")
    assert view is not None and not view.online and view.last_heartbeat is None


def test_wakeup_heartbeat_without_counters_keeps_the_previous_counters(
    state: ClusterState, clock: FakeClock
) -> None:
    state.event(heartbeat(clock, active=2, processed=9))
    # The reply to the `heartbeat` command carries only freq and sw_* (wire spec 5.2).
    state.event(ev("worker-heartbeat", clock, freq=5, sw_ident="py-celery"))
    view = state.worker("w1@lab")
    assert view is not None and (view.active, view.processed, view.freq) == (2, 9, 5.0)


def test_task_events_mark_a_worker_seen_but_not_online(
    state: ClusterState, clock: FakeClock
) -> None:
    state.event(ev("task-started", clock, uuid="t1", hostname="w2@lab"))
    view = state.worker("w2@lab")
    assert view is not None
    assert not view.online and view.last_seen == clock.time()


# -- tasks ------------------------------------------------------------------------------------
def lifecycle(clock: FakeClock, task_id: str = "t1") -> list[dict[str, Any]]:
    received = ev(
        "task-received",
        clock,
        uuid=task_id,
        name="tasks.add",
        args="(2, 3)",
        kwargs="{}",
        root_id=task_id,
        parent_id=None,
        retries=0,
        eta=None,
        expires=None,
    )
    clock.advance(0.5)
    started = ev("task-started", clock, uuid=task_id)
    clock.advance(0.25)
    succeeded = ev("task-succeeded", clock, uuid=task_id, result="5", runtime=0.25)
    return [received, started, succeeded]


def test_task_lifecycle_folds_into_one_view(state: ClusterState, clock: FakeClock) -> None:
    t0 = clock.time()
    state.apply(lifecycle(clock))
    task = state.task("t1")
    assert task is not None
    assert (task.state, task.name, task.args, task.kwargs) == (
        states.SUCCESS,
        "tasks.add",
        "(2, 3)",
        "{}",
    )
    assert (task.received, task.started, task.succeeded) == (t0, t0 + 0.5, t0 + 0.75)
    assert (task.result, task.runtime, task.worker, task.retries) == ("5", 0.25, "w1@lab", 0)
    assert task.is_ready
    assert state.task_count == 1
    assert state.event_count == 3


def test_out_of_order_received_fills_fields_without_regressing_state(
    state: ClusterState, clock: FakeClock
) -> None:
    received, started, succeeded = lifecycle(clock)
    state.apply([succeeded, started, received])
    task = state.task("t1")
    assert task is not None
    assert task.state == states.SUCCESS
    assert task.name == "tasks.add" and task.args == "(2, 3)"
    assert task.started == started["timestamp"] and task.received == received["timestamp"]
    assert task.timestamp == succeeded["timestamp"]


def test_failure_keeps_exception_and_traceback(state: ClusterState, clock: FakeClock) -> None:
    state.event(
        ev(
            "task-failed",
            clock,
            uuid="t1",
            exception="ValueError('boom')",
            traceback="Traceback ...\nValueError: boom",
        )
    )
    task = state.task("t1")
    assert task is not None and task.state == states.FAILURE
    assert task.exception == "ValueError('boom')" and "boom" in (task.traceback or "")


def test_retry_then_start_moves_on(state: ClusterState, clock: FakeClock) -> None:
    state.event(ev("task-received", clock, uuid="t1", name="tasks.retrying"))
    state.event(ev("task-retried", clock, uuid="t1", exception="Retry()", traceback=""))
    assert state.task("t1").state == states.RETRY  # type: ignore[union-attr]
    state.event(ev("task-received", clock, uuid="t1", retries=1))
    state.event(ev("task-started", clock, uuid="t1"))
    task = state.task("t1")
    assert task is not None and task.state == states.STARTED and task.retries == 1


def test_task_sent_records_the_client_not_a_worker(state: ClusterState, clock: FakeClock) -> None:
    state.event(
        ev("task-sent", clock, uuid="t1", hostname="gen1@vm", name="tasks.add", queue="celery")
    )
    task = state.task("t1")
    assert task is not None
    assert (task.state, task.client, task.worker) == (states.PENDING, "gen1@vm", None)
    assert state.workers() == []
    state.event(ev("task-received", clock, uuid="t1"))
    assert state.task("t1").worker == "w1@lab"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("type", "fields", "expected"),
    [
        ("task-revoked", {"terminated": True, "signum": 15, "expired": False}, states.REVOKED),
        ("task-rejected", {"requeue": False}, states.REJECTED),
        ("task-custom", {}, "CUSTOM"),
    ],
)
def test_other_task_events_set_their_state(
    state: ClusterState, clock: FakeClock, type: str, fields: dict[str, Any], expected: str
) -> None:
    state.event(ev(type, clock, uuid="t1", **fields))
    assert state.task("t1").state == expected  # type: ignore[union-attr]


def test_tasks_are_listed_newest_first_and_filtered(state: ClusterState, clock: FakeClock) -> None:
    state.apply(lifecycle(clock, "a"))
    state.event(ev("task-received", clock, uuid="b", name="tasks.sleeper", hostname="w2@lab"))
    state.event(ev("task-failed", clock, uuid="c", exception="X()"))
    assert [t.uuid for t in state.tasks()] == ["c", "b", "a"]
    assert [t.uuid for t in state.tasks(limit=1)] == ["c"]
    assert [t.uuid for t in state.tasks(state=states.RECEIVED)] == ["b"]
    assert [t.uuid for t in state.tasks(worker="w2@lab")] == ["b"]
    assert [t.uuid for t in state.tasks(name="tasks.add")] == ["a"]
    assert state.counts() == {states.SUCCESS: 1, states.RECEIVED: 1, states.FAILURE: 1}


# -- bounds and junk --------------------------------------------------------------------------
def test_least_recently_updated_tasks_are_evicted(clock: FakeClock) -> None:
    state = ClusterState(max_tasks=3, now=clock.time)
    for i in range(4):
        state.event(ev("task-received", clock, uuid=f"t{i}"))
    state.event(ev("task-started", clock, uuid="t1"))  # t1 becomes the most recent
    state.event(ev("task-received", clock, uuid="t4"))
    assert sorted(t.uuid for t in state.tasks()) == ["t1", "t3", "t4"]


def test_workers_are_bounded_too(clock: FakeClock) -> None:
    state = ClusterState(max_workers=2, now=clock.time)
    for name in ("a@h", "b@h", "c@h"):
        state.event(heartbeat(clock, hostname=name))
    assert [w.hostname for w in state.workers()] == ["b@h", "c@h"]


@pytest.mark.parametrize(
    "junk",
    [
        {},
        {"type": 5},
        {"type": "task-started"},
        {"type": "task-started", "uuid": 7},
        {"type": "worker-heartbeat", "hostname": None},
        {
            "type": "worker-heartbeat",
            "hostname": "w@h",
            "freq": "often",
            "loadavg": "high",
            "active": "many",
            "clock": "x",
            "pid": [1],
        },
        {
            "type": "task-succeeded",
            "uuid": "t",
            "runtime": "fast",
            "result": [1, 2],
            "retries": "no",
            "timestamp": None,
            "clock": 1.5,
        },
        {"type": "nonsense"},
    ],
)
def test_junk_events_never_break_the_state(state: ClusterState, junk: dict[str, Any]) -> None:
    state.event(junk)
    for worker in state.workers():
        assert isinstance(worker, WorkerView)
        assert worker.active is None and worker.clock == 0 and worker.freq == 60.0
    for task in state.tasks():
        assert isinstance(task, TaskView)
        assert task.runtime is None and task.result == "[1, 2]" and task.retries is None


def test_clear_forgets_everything(state: ClusterState, clock: FakeClock) -> None:
    state.apply([heartbeat(clock), *lifecycle(clock)])
    state.clear()
    assert state.workers() == [] and state.tasks() == [] and state.event_count == 0


# -- Celery's captured events -----------------------------------------------------------------
def captured_events(name: str) -> list[dict[str, Any]]:
    path = CAPTURES / f"{name}.txt"
    if not path.exists():
        pytest.skip(f"capture {path} not available")
    out: list[dict[str, Any]] = []
    decoder = json.JSONDecoder()
    for line in path.read_text().splitlines():
        if '"body(decoded from base64)"' not in line or "celeryev" not in line:
            continue
        view, _ = decoder.raw_decode(line, line.index("=> ") + 3)
        body = view.pop("body(decoded from base64)")
        view["body"] = base64.b64encode(json.dumps(body).encode()).decode()
        out.extend(parse_event_message(json.dumps(view))[1])
    return out


def test_celerys_captured_events_fold_into_a_succeeded_task(clock: FakeClock) -> None:
    found = captured_events("events_dump")
    assert {e["type"] for e in found} >= {"worker-heartbeat", "task-received", "task-succeeded"}
    clock.advance(found[-1]["timestamp"] - clock.time())
    state = ClusterState(now=clock.time)
    for e in found:
        state.event({**e, "local_received": e["timestamp"]})
    task = state.task("b11d6997-057f-46bb-8925-caf10e5287a0")
    assert task is not None
    assert (task.state, task.name, task.result, task.worker) == (
        states.SUCCESS,
        "tasks.add",
        "5",
        "w1@lab",
    )
    worker = state.worker("w1@lab")
    assert worker is not None and worker.sw_ident == "py-celery" and worker.online
