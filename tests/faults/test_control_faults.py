"""Remote control and events across broker faults (RELIABILITY.md T29): ``ping``,
``rate_limit`` and ``revoke`` before, during and after a broker restart (T10's SHUTDOWN and
restart from the AOF) and a ``CLIENT KILL`` of every worker connection (T12). The worker must
subscribe to the pidbox again, apply commands sent after the reconnect, and resume its
``worker-heartbeat`` events.

``test_broker_faults.py`` already checks that ping answers after both faults; this file
checks that commands *take effect*, what happens to commands sent during the fault, and the
heartbeats.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from tests.faults.harness import Rig, Worker, is_answering, publish_many, wait_until

from tq import App, states
from tq.app.events import EventReceiver

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: A rate slow enough that a second task visibly waits on the bucket (one start per 10 s).
SLOW_RATE = "6/m"
#: Countdown of the task held across the fault (longer than the outage and the commands
#: sent during it, which wait for connection retries).
HELD_COUNTDOWN_S = 16.0


class Heartbeats:
    """Records when ``worker-heartbeat`` events of one node arrive (a background receiver,
    reconnecting by itself; no wakeup broadcast, so only the worker's own timer counts)."""

    def __init__(self, app: App, nodename: str) -> None:
        self.nodename = nodename
        self.seen: list[float] = []
        self.receiver = EventReceiver(
            app, handlers={"worker-heartbeat": self._on}, routing_key="worker.#"
        )
        self.thread = threading.Thread(target=self._run, name="t29-events", daemon=True)
        self.thread.start()

    def _on(self, event: dict[str, Any]) -> None:
        if event.get("hostname") == self.nodename:
            self.seen.append(time.monotonic())

    def _run(self) -> None:
        self.receiver.capture(wakeup=False)

    def since(self, t: float) -> list[float]:
        return [s for s in self.seen if s > t]

    def stop(self) -> None:
        self.receiver.stop()
        self.thread.join(5)


def _rate_limit_takes_effect(app: App, worker: Worker, rig: Rig) -> None:
    """``rate_limit`` answers and applies: with ``6/m`` the second of two tasks waits on the
    bucket; removing the limit releases it at once."""
    replies = app.control.rate_limit(
        "fault.work", SLOW_RATE, destination=[worker.nodename], reply=True, timeout=3
    )
    assert replies and "ok" in replies[0][worker.nodename], replies
    first, second = publish_many(app, "fault.work", 2)
    wait_until(lambda: rig.ledger.done_of(first) == 1, 20, "the first rate-limited task")

    def waiting_on_bucket() -> bool:
        got = app.control.inspect(destination=[worker.nodename], timeout=1).reserved() or {}
        return any(r.get("id") == second for r in got.get(worker.nodename, []))

    wait_until(waiting_on_bucket, 10, "the second task to wait on the bucket")
    assert rig.ledger.exec_of(second) == 0
    replies = app.control.rate_limit(
        "fault.work", None, destination=[worker.nodename], reply=True, timeout=3
    )
    assert replies, "no reply to the rate_limit removal"
    wait_until(lambda: rig.ledger.done_of(second) == 1, 10, "the released task")


def _revoke_takes_effect(app: App, worker: Worker, rig: Rig, broadcast: bool = False) -> str:
    """A task held for its countdown is revoked (by destination, with a reply; or as a
    cluster-wide broadcast without one) and never runs. Returns the id."""
    target = app.send_task("fault.work_result", countdown=3)

    def held() -> bool:
        got = app.control.inspect(destination=[worker.nodename], timeout=1).scheduled() or {}
        return any(e["request"]["id"] == target.id for e in got.get(worker.nodename, []))

    wait_until(held, 20, "the countdown task in the worker's schedule")
    if broadcast:
        app.control.revoke(target.id)
    else:
        replies = app.control.revoke(
            target.id, destination=[worker.nodename], reply=True, timeout=3
        )
        assert replies, "no reply to revoke"
    wait_until(lambda: app.AsyncResult(target.id).state == states.REVOKED, 15, "REVOKED")
    return target.id


def _during(app: App) -> dict[str, str]:
    """Each command sent while the broker is down: the sender must be told (an exception or
    no reply), never a silent success."""
    out: dict[str, str] = {}
    calls = {
        "ping": lambda: app.control.ping(timeout=1),
        "rate_limit": lambda: app.control.rate_limit("fault.work", "1/s", reply=True, timeout=1),
        "revoke": lambda: app.control.revoke("never-sent-id", reply=True, timeout=1),
    }
    for name, call in calls.items():
        try:
            out[name] = f"no reply ({call()!r})"
        except Exception as exc:
            out[name] = type(exc).__name__
    return out


@pytest.mark.timeout(150)
@pytest.mark.parametrize("fault", ["broker-restart", "client-kill"])
def test_remote_control_and_heartbeats_across_broker_faults(
    rig: Rig, fault: str, figures: dict[str, object]
) -> None:
    """T29: commands work before the fault; while the broker is down every command raises
    (the sender knows it was not delivered); a cluster-wide revoke sent just after the broker
    is back, before the worker has subscribed again, still reaches it (it is stored in
    ``tq.revoked``); afterwards ping answers, ``rate_limit`` and ``revoke`` take effect, and
    heartbeats resume."""
    app = rig.app()
    worker = rig.worker(concurrency=2)
    beats = Heartbeats(rig.app(), worker.nodename)
    try:
        wait_until(lambda: beats.seen, 15, "a first heartbeat")
        assert is_answering(app, worker.nodename)
        _rate_limit_takes_effect(app, worker, rig)
        _revoke_takes_effect(app, worker, rig)
        # a task held for its countdown across the fault, revoked in the reconnect window
        held_sent = time.monotonic()
        held = app.send_task("fault.work_result", countdown=HELD_COUNTDOWN_S)
        wait_until(
            lambda: app.transport.queue_length("celery") == 0 and rig.unacked(app) == 1,
            15,
            "the countdown task to be held by the worker",
        )
        during: dict[str, str] = {}
        if fault == "broker-restart":
            rig.broker.shutdown()
            during = _during(app)
            time.sleep(3.0)  # the outage (T10)
            rig.broker.start()
        else:
            admin = rig.broker.client()
            admin.client_kill_filter(_type="pubsub", skipme=True)
            admin.client_kill_filter(_type="normal", skipme=True)
            admin.close()
        back = time.monotonic()
        app.control.revoke(held.id)  # cluster-wide, probably before the worker resubscribed
        resubscribed = wait_until(
            lambda: is_answering(app, worker.nodename), 30, "ping again", interval=0.05
        )
        assert resubscribed
        ping_s = time.monotonic() - back
        wait_until(lambda: beats.since(back), 15, "a heartbeat after the fault")
        heartbeat_s = beats.since(back)[0] - back
        _rate_limit_takes_effect(app, worker, rig)
        revoked_after = _revoke_takes_effect(app, worker, rig, broadcast=True)
        # once the held task's countdown has passed: REVOKED, never run
        time.sleep(max(0.0, HELD_COUNTDOWN_S + 0.5 - (time.monotonic() - held_sent)))
        try:
            wait_until(
                lambda: app.AsyncResult(held.id).state == states.REVOKED,
                15,
                "the task revoked in the reconnect window to be REVOKED",
            )
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; it ran {rig.ledger.exec_of(held.id)}x\n{rig.logs()}"
            ) from None
        held_runs = rig.ledger.exec_of(held.id)
        why = f"held ran {held_runs}x\n{rig.logs()}"
        assert held_runs == 0, why
        assert rig.ledger.exec_of(revoked_after) == 0, why
        if during:
            assert all(not v.startswith("no reply ([{") for v in during.values()), during
        beats_after = len(beats.since(back))
    finally:
        beats.stop()
    assert worker.is_alive()
    figures.update(
        row="T29",
        fault=fault,
        during_outage=during or None,
        ping_again_s=round(ping_s, 2),
        first_heartbeat_after_s=round(heartbeat_s, 2),
        heartbeats_after=beats_after,
        revoke_in_reconnect_window_honoured=held_runs == 0,
        lost_commands=0,
    )
