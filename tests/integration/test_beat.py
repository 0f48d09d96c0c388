"""Beat against a real Redis: sends on time, never twice, hands over, survives restarts.

The App is a stand-in with exactly what Beat uses (``conf``, ``broker_client()``,
``send_task``); Redis is real. Real-clock tests wait with bounded condition waits; the rest drive
``tick(now)`` with a FakeClock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tq.beat import Beat, BeatStore, crontab
from tq.beat.store import entry_key, lock_key
from tq.clock import FakeClock

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


@dataclass(frozen=True)
class Sent:
    by: str
    at: float  # time.monotonic()
    task: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: dict[str, Any]


@dataclass
class Ledger:
    """Every send_task call, from any number of stand-in apps, in order."""

    sent: list[Sent] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def add(self, item: Sent) -> None:
        with self.changed:
            self.sent.append(item)
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float, by: str | None = None) -> bool:
        def enough() -> bool:
            return len([s for s in self.sent if by in (None, s.by)]) >= count

        with self.changed:
            return self.changed.wait_for(enough, timeout)


class StandInApp:
    """What Beat needs from the App, and nothing else."""

    def __init__(
        self,
        client: redis.Redis,
        beat_schedule: dict[str, dict[str, Any]],
        prefix: str,
        *,
        label: str = "app",
        ledger: Ledger | None = None,
        timezone: str | None = None,
        failing_tasks: frozenset[str] = frozenset(),
    ) -> None:
        self.conf = SimpleNamespace(
            beat_schedule=beat_schedule,
            timezone=timezone,
            enable_utc=True,
            beat_max_loop_interval=None,
            broker_transport_options={"global_keyprefix": prefix},
        )
        self.ledger = ledger if ledger is not None else Ledger()
        self._client = client
        self._label = label
        self._failing = failing_tasks

    def broker_client(self) -> redis.Redis:
        return self._client

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        if name in self._failing:
            raise RuntimeError(f"cannot publish {name}")
        sent = Sent(
            self._label, time.monotonic(), name, tuple(args or ()), dict(kwargs or {}), options
        )
        self.ledger.add(sent)
        return SimpleNamespace(id=str(uuid.uuid4()))


def every(seconds: float, task: str = "tasks.tick") -> dict[str, dict[str, Any]]:
    return {"tick": {"task": task, "schedule": seconds}}


@contextlib.contextmanager
def running(beat: Beat) -> Iterator[threading.Event]:
    """Run ``beat.run`` in a thread; on exit stop it and join with a deadline."""
    stop = threading.Event()
    thread = threading.Thread(target=beat.run, args=(stop,), name="beat", daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=5)
        assert not thread.is_alive(), "beat did not stop within 5 s"


def run_until_killed(beat: Beat, killed: threading.Event) -> None:
    """A beat process that dies when ``killed`` is set: no release, no goodbye."""
    while not killed.is_set():
        killed.wait(beat.tick(time.time()))


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def seed_anchor(client: redis.Redis, prefix: str, name: str = "tick") -> float:
    """Store "now" as the entry's anchor so the test knows the grid of due times."""
    return BeatStore(client, prefix).ensure({name: time.time()})[name].last_due


def assert_every_grid_point_sent_once(
    client: redis.Redis, prefix: str, anchor: float, period: float, ledger: Ledger
) -> int:
    record = BeatStore(client, prefix).read(["tick"])["tick"]
    periods = round((record.last_due - anchor) / period)
    assert abs(record.last_due - (anchor + periods * period)) < 0.002, "claims left the grid"
    # Each claim counts once and advances by at least one period, so counts that agree with the
    # number of grid points mean none was skipped; sends that agree mean none was doubled.
    assert record.total_run_count == periods
    assert len(ledger.sent) == periods
    return periods


# --- real clock -------------------------------------------------------------------------------


def test_one_second_interval_fires_three_times_in_about_three_seconds(
    client: redis.Redis, prefix: str
) -> None:
    schedule = {
        "tick": {
            "task": "tasks.tick",
            "schedule": 1.0,
            "args": (1,),
            "kwargs": {"k": "v"},
            "options": {"queue": "beat"},
        }
    }
    app = StandInApp(client, schedule, prefix)
    beat = Beat(app, lock_ttl_s=2.0)
    started = time.monotonic()
    with running(beat):
        assert app.ledger.wait_for(3, timeout=5.0)
        third = app.ledger.sent[2].at - started
    assert 2.5 <= third <= 3.8
    gaps = [b.at - a.at for a, b in zip(app.ledger.sent, app.ledger.sent[1:3], strict=False)]
    assert all(0.75 <= gap <= 1.25 for gap in gaps), gaps
    first = app.ledger.sent[0]
    assert (first.task, first.args, first.kwargs, first.options) == (
        "tasks.tick",
        (1,),
        {"k": "v"},
        {"queue": "beat"},
    )
    assert beat.leader() is None  # run() gave the lock up when it stopped


def test_two_beats_running_at_once_send_each_due_time_exactly_once(
    client: redis.Redis, prefix: str
) -> None:
    ledger = Ledger()
    anchor = seed_anchor(client, prefix)
    beats = [
        Beat(StandInApp(client, every(0.5), prefix, label=label, ledger=ledger), lock_ttl_s=1.0)
        for label in ("a", "b")
    ]
    with running(beats[0]), running(beats[1]):
        assert ledger.wait_for(12, timeout=9.0)  # about 6 s of half-second runs
    assert_every_grid_point_sent_once(client, prefix, anchor, 0.5, ledger)
    assert {s.by for s in ledger.sent} in ({"a"}, {"b"})  # one leader the whole time


def test_dead_leader_is_replaced_within_the_lock_timeout_without_missed_or_doubled_runs(
    client: redis.Redis, prefix: str
) -> None:
    ttl, period = 1.0, 1.5  # a handover (<= ttl + ttl/4 poll) is shorter than one period
    ledger = Ledger()
    anchor = seed_anchor(client, prefix)
    leader = Beat(
        StandInApp(client, every(period), prefix, label="a", ledger=ledger), lock_ttl_s=ttl
    )
    standby = Beat(
        StandInApp(client, every(period), prefix, label="b", ledger=ledger), lock_ttl_s=ttl
    )
    killed = threading.Event()
    thread = threading.Thread(target=run_until_killed, args=(leader, killed), daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: leader.leader() == leader.token, timeout=2.0)
        with running(standby):
            assert ledger.wait_for(2, timeout=5.0, by="a")
            killed.set()
            thread.join(timeout=5)
            died = time.monotonic()
            assert wait_until(lambda: standby.leader() == standby.token, timeout=ttl + 1.0)
            took_over = time.monotonic() - died
            assert ledger.wait_for(2, timeout=2 * period + ttl + 1.0, by="b")
    finally:
        killed.set()
        thread.join(timeout=5)
    assert took_over <= ttl + ttl / 4 + 0.3
    assert not [s for s in ledger.sent if s.by == "a" and s.at > died]
    assert_every_grid_point_sent_once(client, prefix, anchor, period, ledger)


def test_run_survives_an_unreachable_redis_and_stops_cleanly(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    app = StandInApp(dead, every(1.0), prefix)

    def failures() -> int:
        return sum("tick failed" in r.getMessage() for r in caplog.records)

    with caplog.at_level("ERROR", logger="tq.beat"), running(Beat(app, lock_ttl_s=1.0)):
        assert wait_until(lambda: failures() >= 2, timeout=5.0)  # it retried after failing
    assert app.ledger.sent == []
    dead.close()


# --- fake clock -------------------------------------------------------------------------------

T0 = datetime(2024, 6, 3, 12, 0, tzinfo=UTC).timestamp()


def test_downtime_catches_up_with_a_single_run(client: redis.Redis, prefix: str) -> None:
    clock = FakeClock(T0)
    app = StandInApp(client, every(10.0), prefix)
    beat = Beat(app, clock=clock, lock_ttl_s=30)
    assert beat.tick(T0) == pytest.approx(10.0)
    assert beat.tick(T0 + 3600.5) == pytest.approx(9.5)  # 360 due times missed: one run
    assert len(app.ledger.sent) == 1
    assert beat.tick(T0 + 3601) == pytest.approx(9.0)
    assert len(app.ledger.sent) == 1
    record = BeatStore(client, prefix).read(["tick"])["tick"]
    assert (record.last_due, record.total_run_count) == (T0 + 3600, 1)


def test_last_run_state_survives_a_restart(client: redis.Redis, prefix: str) -> None:
    clock = FakeClock(T0)
    first = Beat(StandInApp(client, every(10.0), prefix), clock=clock, lock_ttl_s=30)
    for offset in (0, 10, 20):
        first.tick(T0 + offset)
    first.close()

    app = StandInApp(client, every(10.0), prefix)
    second = Beat(app, clock=clock, lock_ttl_s=30)
    (state,) = second.entries_info(now=T0 + 25)
    assert (state.total_run_count, state.last_run, state.next_run) == (2, T0 + 20, T0 + 30)
    assert second.tick(T0 + 25) == pytest.approx(5.0)
    assert app.ledger.sent == []  # due time T0+20 is not sent again
    second.tick(T0 + 30)
    assert len(app.ledger.sent) == 1
    assert second.entries_info(now=T0 + 30)[0].total_run_count == 3


def test_new_leader_does_not_resend_what_the_old_leader_sent(
    client: redis.Redis, prefix: str
) -> None:
    ledger = Ledger()
    clock = FakeClock(T0)
    old = Beat(
        StandInApp(client, every(10.0), prefix, label="a", ledger=ledger),
        clock=clock,
        lock_ttl_s=30,
    )
    new = Beat(
        StandInApp(client, every(10.0), prefix, label="b", ledger=ledger),
        clock=clock,
        lock_ttl_s=30,
    )
    old.tick(T0)
    old.tick(T0 + 10)
    assert new.tick(T0 + 10) == pytest.approx(30 / 4)  # standby: polls the lock, sends nothing
    client.delete(lock_key(prefix))  # the old leader's lock expired while it was paused
    new.tick(T0 + 10)  # new leader, same due time: the claim fails
    assert [s.by for s in ledger.sent] == ["a"]
    new.tick(T0 + 20)
    old.tick(T0 + 20)  # the old leader wakes up: its lock is gone, it sends nothing
    assert [s.by for s in ledger.sent] == ["a", "b"]


def test_crontab_fires_in_the_app_timezone_once_across_dst(
    client: redis.Redis, prefix: str
) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    schedule = {"nightly": {"task": "tasks.report", "schedule": crontab(minute=30, hour=2)}}
    app = StandInApp(client, schedule, prefix, timezone="Europe/Berlin")

    def utc(*fields: int) -> float:
        return datetime(*fields, tzinfo=UTC).timestamp()  # type: ignore[arg-type,misc]

    start = datetime(2024, 10, 26, 12, tzinfo=berlin).timestamp()
    beat = Beat(app, clock=FakeClock(start), lock_ttl_s=30)
    beat.tick(start)
    beat.tick(utc(2024, 10, 27, 0, 29))
    assert app.ledger.sent == []
    beat.tick(utc(2024, 10, 27, 0, 30))  # 02:30 CEST
    beat.tick(utc(2024, 10, 27, 1, 30))  # 02:30 CET, the same wall time again
    assert len(app.ledger.sent) == 1
    assert beat.entries_info(now=utc(2024, 10, 27, 1, 31))[0].next_run == utc(2024, 10, 28, 1, 30)


def test_trigger_sends_now_and_counts_without_moving_due_times(
    client: redis.Redis, prefix: str
) -> None:
    clock = FakeClock(T0)
    app = StandInApp(client, every(10.0), prefix)
    beat = Beat(app, clock=clock, lock_ttl_s=30)
    beat.tick(T0)
    clock.advance(3)
    task_id = beat.trigger("tick")
    (state,) = beat.entries_info()
    assert (state.total_run_count, state.last_run, state.last_result) == (1, T0 + 3, task_id)
    assert state.next_run == T0 + 10
    beat.tick(T0 + 10)
    assert len(app.ledger.sent) == 2
    with pytest.raises(KeyError):
        beat.trigger("nope")


def test_a_failing_send_is_recorded_and_does_not_stop_other_entries(
    client: redis.Redis, prefix: str
) -> None:
    schedule = {
        "broken": {"task": "tasks.broken", "schedule": 10.0},
        "fine": {"task": "tasks.fine", "schedule": 10.0},
    }
    app = StandInApp(client, schedule, prefix, failing_tasks=frozenset({"tasks.broken"}))
    beat = Beat(app, clock=FakeClock(T0), lock_ttl_s=30)
    beat.tick(T0)
    beat.tick(T0 + 10)
    assert [s.task for s in app.ledger.sent] == ["tasks.fine"]
    broken, fine = beat.entries_info(now=T0 + 10)
    assert broken.last_result is not None and broken.last_result.startswith("error: RuntimeError")
    assert (broken.total_run_count, fine.total_run_count) == (1, 1)


def test_entries_info_has_the_worker_snapshot_shape(client: redis.Redis, prefix: str) -> None:
    from tq.worker.snapshot import BeatEntryInfo

    beat = Beat(StandInApp(client, every(90.0), prefix), clock=FakeClock(T0), lock_ttl_s=30)
    (state,) = beat.entries_info(now=T0)  # nothing stored yet: creates nothing
    assert client.keys(f"{prefix}*") == []
    info = BeatEntryInfo(**{f.name: getattr(state, f.name) for f in dataclasses.fields(state)})
    assert info == BeatEntryInfo("tick", "tasks.tick", "every 1m30s", T0 + 90, None, 0, None)


def test_every_key_carries_the_global_prefix(client: redis.Redis, prefix: str) -> None:
    beat = Beat(StandInApp(client, every(10.0), prefix), clock=FakeClock(T0), lock_ttl_s=30)
    beat.tick(T0)
    keys = {k.decode() if isinstance(k, bytes) else k for k in client.keys(f"{prefix}*")}
    assert keys == {lock_key(prefix), entry_key("tick", prefix)}
    assert all(k.startswith(prefix + "tq.beat.") for k in keys)
