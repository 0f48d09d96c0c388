"""Signals fire with Celery's argument names (as Celery 5.7 sends them: ``celery/app/trace.py``,
``celery/worker/{strategy,request,consumer/consumer}.py``, ``celery/apps/worker.py``).

Receivers live in the test process, so the tasks run on the threads or solo pool.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from tests import runtime_tasks as tasks
from tests.integration.runtime_fixtures import Ledger, wait_state, wait_until

from tq import signals, states

pytestmark = pytest.mark.redis

#: Keyword arguments each receiver gets besides ``signal`` and ``sender``, in Celery 5.7.
CELERY_ARGUMENTS: dict[str, set[str]] = {
    "task_received": {"request"},
    "task_prerun": {"task_id", "task", "args", "kwargs"},
    "task_postrun": {"task_id", "task", "args", "kwargs", "retval", "state"},
    "task_success": {"result", "runtime"},
    "task_failure": {"task_id", "exception", "args", "kwargs", "traceback", "einfo"},
    "task_retry": {"request", "reason", "einfo"},
    "task_revoked": {"request", "terminated", "signum", "expired"},
    "task_unknown": {"message", "exc", "name", "id"},
    "worker_ready": set(),
    "worker_shutdown": set(),
}


class Recorder:
    """Connects one strict receiver per signal; each records the keyword arguments it got."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._receivers: list[tuple[signals.Signal, Any]] = []

    def connect(self) -> None:
        for name in CELERY_ARGUMENTS:
            sig = getattr(signals, name)
            receiver = self._receiver(name)
            sig.connect(receiver)
            self._receivers.append((sig, receiver))

    def disconnect(self) -> None:
        for sig, receiver in self._receivers:
            sig.disconnect(receiver)

    def _receiver(self, name: str) -> Any:
        def receive(signal: Any = None, sender: Any = None, **kwargs: Any) -> None:
            with self._lock:
                self.calls.append((name, {"sender": sender, **kwargs}))

        return receive

    def of(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [kw for n, kw in self.calls if n == name]

    def where(self, signal_name: str, /, **match: Any) -> list[dict[str, Any]]:
        calls = self.of(signal_name)
        return [kw for kw in calls if all(_get(kw, k) == v for k, v in match.items())]


def _get(kwargs: dict[str, Any], dotted: str) -> Any:
    value: Any = kwargs
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
    return value


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    rec.connect()
    yield rec
    rec.disconnect()


def _assert_celery_names(recorder: Recorder, name: str) -> None:
    calls = recorder.of(name)
    assert calls, f"{name} never fired"
    for kwargs in calls:
        got = set(kwargs) - {"sender"}
        assert got == CELERY_ARGUMENTS[name], f"{name}: sent {sorted(got)}"


@pytest.mark.parametrize("pool", ["threads", "solo"])
@pytest.mark.timeout(60)
def test_task_and_worker_signals_fire_with_celerys_argument_names(
    make_runtime: Any, ledger: Ledger, recorder: Recorder, pool: str
) -> None:
    runtime = make_runtime(pool=pool, concurrency=2 if pool == "threads" else 1)
    assert recorder.where("worker_ready", sender=runtime)

    ok = tasks.noop.delay("fine")
    assert ok.get(timeout=10) == "fine"
    bad = tasks.failing.delay("bad")
    wait_state(bad.id, states.FAILURE)
    retried = tasks.retry_countdown.delay(0.3)  # well clear of the open stale-RETRY race
    wait_state(retried.id, states.FAILURE)
    expired = tasks.noop.apply_async(expires=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    wait_state(expired.id, states.REVOKED)
    unknown = tasks.app.send_task("tests.runtime_tasks.no_such_task", ("x",))
    wait_state(unknown.id, states.FAILURE)
    wait_until(
        lambda: recorder.of("task_postrun") and len(recorder.of("task_postrun")) >= 6,
        10,
        "postrun of every execution",
    )

    assert recorder.where("task_received", **{"request.id": ok.id})
    assert recorder.where("task_prerun", task_id=ok.id, args=["fine"], kwargs={})
    assert recorder.where("task_postrun", task_id=ok.id, retval="fine", state=states.SUCCESS)
    assert recorder.where("task_success", result="fine", sender=tasks.noop)
    failure = recorder.where("task_failure", task_id=bad.id)
    assert failure and isinstance(failure[0]["exception"], ValueError)
    assert len(recorder.where("task_retry", **{"request.id": retried.id})) == 3
    assert recorder.where("task_failure", task_id=retried.id)
    assert recorder.where(
        "task_revoked", **{"request.id": expired.id}, expired=True, terminated=False
    )
    assert recorder.where("task_unknown", name="tests.runtime_tasks.no_such_task", id=unknown.id)

    runtime.stop(10)
    assert recorder.where("worker_shutdown", sender=runtime)
    for name in CELERY_ARGUMENTS:
        _assert_celery_names(recorder, name)


@pytest.mark.timeout(30)
def test_task_revoked_signal_for_a_revoked_queued_id(
    make_runtime: Any, ledger: Ledger, recorder: Recorder
) -> None:
    runtime = make_runtime(pool="threads", concurrency=1)
    blocker = tasks.wait_for_flag.delay("signals")
    ledger.wait_started(blocker.id)
    queued = tasks.noop.delay("never")
    wait_until(
        lambda: any(r.task_id == queued.id for r in runtime.snapshot().reserved),
        10,
        "the queued task in the reserved line",
    )
    runtime.revoke(queued.id)
    ledger.set_flag("signals")
    blocker.get(timeout=10)
    wait_until(
        lambda: recorder.where("task_revoked", **{"request.id": queued.id}),
        10,
        "task_revoked for the queued id",
    )
    (call,) = recorder.where("task_revoked", **{"request.id": queued.id})
    assert call["terminated"] is False and call["expired"] is False and call["signum"] is None
    assert ledger.execs(queued.id) == 0
    _assert_celery_names(recorder, "task_revoked")
