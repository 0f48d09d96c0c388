"""bridge.py: the ReplayBridge plays and records; the RuntimeBridge delegates to a runtime."""

from __future__ import annotations

from typing import Any

import pytest
from recorded import recorded_snapshot, recorded_snapshots

from tq.worker.snapshot import CommandResult
from tq_console.bridge import Bridge, ReplayBridge, RuntimeBridge

pytestmark = pytest.mark.console


def test_recorded_snapshots_are_deterministic_and_advance_in_time() -> None:
    first, second = recorded_snapshots(), recorded_snapshots()
    assert first == second
    assert [s.taken_at for s in first] == sorted(s.taken_at for s in first)
    assert all(event.time <= snap.taken_at for snap in first for event in snap.events)


def test_replay_plays_snapshots_in_order_then_stays_on_the_last() -> None:
    bridge = ReplayBridge(recorded_snapshots(3))
    times = [bridge.snapshot().taken_at for _ in range(5)]
    assert times == [times[0], times[0] + 2, times[0] + 4, times[0] + 4, times[0] + 4]
    assert bridge.polls == 5


def test_replay_loops_when_asked() -> None:
    bridge = ReplayBridge(recorded_snapshots(2), loop=True)
    times = [bridge.snapshot().taken_at for _ in range(3)]
    assert times[0] == times[2] != times[1]


def test_replay_is_a_bridge_and_so_is_the_runtime_bridge() -> None:
    assert isinstance(ReplayBridge([recorded_snapshot(0)]), Bridge)
    assert isinstance(RuntimeBridge(object()), Bridge)


def test_replay_purge_empties_the_queue_in_later_snapshots() -> None:
    bridge = ReplayBridge([recorded_snapshot(0)])
    bridge.snapshot()
    assert bridge.queue_length("default") > 0
    result = bridge.purge("default")
    assert result.ok and result.count == 1204 + 96 + 12
    queue = next(q for q in bridge.snapshot().queues if q.name == "default")
    assert queue.ready == 0
    assert bridge.queue_length("default") == 0
    assert bridge.called("purge") == [("default",)]


def test_replay_applies_pause_resume_pool_rates_dead_letters_and_stop() -> None:
    bridge = ReplayBridge([recorded_snapshot(0)])
    bridge.pause_queue("default")
    bridge.resume_queue("low")
    bridge.grow(2)
    bridge.shrink(1)
    bridge.set_rate_limit("images.resize", "5/s")
    bridge.requeue_dead("dl-0004")
    bridge.delete_dead("dl-0003")
    bridge.revoke("abc", terminate=True)
    snap = bridge.snapshot()
    consuming = {q.name: q.consuming for q in snap.queues}
    assert consuming["default"] is False and consuming["low"] is True
    assert snap.paused_queues == ("default",)
    assert snap.concurrency == 5
    assert {b.task_name: b.rate for b in snap.buckets}["images.resize"] == "5/s"
    assert [d.id for d in snap.dead_letters] == ["dl-0002", "dl-0001"]
    assert snap.dead_letter_count == 2
    assert "abc" in snap.revoked
    assert bridge.called("revoke") == [("abc", True, "SIGTERM")]
    assert bridge.stop(5.0).ok
    assert bridge.snapshot().state == "stopped"


def test_replay_fails_on_demand_until_cleared() -> None:
    bridge = ReplayBridge([recorded_snapshot(0)])
    bridge.fail(ConnectionError("redis down"))
    with pytest.raises(ConnectionError):
        bridge.snapshot()
    bridge.fail(None)
    assert bridge.snapshot().hostname


def test_replay_keeps_an_action_log() -> None:
    bridge = ReplayBridge([recorded_snapshot(0)])
    bridge.snapshot()
    bridge.record_action("ops@console", "purge('default')", "ok: Purged 1204 messages")
    (entry,) = bridge.action_log()
    assert entry == {
        "time": recorded_snapshot(0).taken_at,
        "who": "ops@console",
        "what": "purge('default')",
        "outcome": "ok: Purged 1204 messages",
    }


def test_replay_needs_a_snapshot() -> None:
    with pytest.raises(ValueError):
        ReplayBridge([])


class _Runtime:
    """Just enough of a Runtime to see what the bridge forwards."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def method(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            if name == "snapshot":
                return recorded_snapshot(0)
            if name == "queue_length":
                return 7
            if name == "action_log":
                return iter([{"who": "x"}])
            if name in ("stop", "record_action"):
                return None
            return CommandResult(ok=True, message=name)

        return method


def test_runtime_bridge_forwards_every_call() -> None:
    runtime = _Runtime()
    bridge = RuntimeBridge(runtime)
    assert bridge.snapshot() == recorded_snapshot(0)
    assert bridge.purge("default").message == "purge"
    bridge.revoke("t1", terminate=True, signal="SIGKILL")
    bridge.retry("t2")
    bridge.requeue_dead("d1")
    bridge.delete_dead("d2")
    bridge.grow(2)
    bridge.shrink()
    bridge.pause_queue("q")
    bridge.resume_queue("q")
    bridge.set_rate_limit("t", "1/s")
    bridge.trigger_beat("b")
    assert bridge.queue_length("q") == 7
    assert bridge.stop(3.0).ok
    bridge.record_action("me", "did", "ok")
    assert bridge.action_log() == [{"who": "x"}]
    names = [name for name, _, _ in runtime.calls]
    assert names == [
        "snapshot", "purge", "revoke", "retry", "requeue_dead", "delete_dead", "grow", "shrink",
        "pause_queue", "resume_queue", "set_rate_limit", "trigger_beat", "queue_length", "stop",
        "record_action", "action_log",
    ]  # fmt: skip
    assert runtime.calls[2] == ("revoke", ("t1",), {"terminate": True, "signal": "SIGKILL"})
