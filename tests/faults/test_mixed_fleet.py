"""A chord whose header task runs twice (RELIABILITY.md T28) and a mixed fleet under faults
(T32): a real Celery 5.7 worker (``celery -A tests.faults.celery_fault_app worker``) and a tq
worker (``tq-console --worker``) on the same private broker, the same queue and the same
ledger.

T28: a chord of 10 ``fault.chord_part`` tasks (acks_late + reject_on_worker_lost). Two of them
carry ``die=True``: their first execution SIGKILLs its own process from ``task_success``, that
is after the part was recorded in the chord (``.j``/``.d``) and before the ack, so a tq worker
requeues the message and the part runs again, once while the chord is still open and once (the
slow one) after the chord has fired. (A Celery 5.7 worker finds the stored SUCCESS instead and
acks.) The callback must run exactly once and no chord key may be left behind but
``.c = "done"``.

T32: T05-like SIGKILL of either worker mid-drain and T07-like warm stop of either worker;
whatever either side restores runs on either side, and the totals match the single-worker rows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.faults.harness import ROOT, START_TIMEOUT_S, Rig, publish_many, wait_until, worker_env

import tq
from tq import App

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.interop]

#: Visibility timeout of the mixed-fleet rows (both sides sweep every second). It must exceed
#: the longest time a message waits in a Celery worker's prefetch buffer: Celery does not
#: renew the leases of what it holds (tq does, T16), so any sweeper (Celery's or tq's) would
#: restore a message a live Celery worker still holds (F2).
VT = 10.0
#: A SIGKILLed sweeper leaves ``unacked_mutex`` behind; both sides use this expiry.
MUTEX_EXPIRE_S = 5
TRANSPORT = {"unacked_mutex_expire": MUTEX_EXPIRE_S}
CHORD_SIZE = 10
#: Task length of the T32 drains: Celery's 20 prefetched messages wait at most about 2.5 s.
TASK_S = 0.25


@dataclass
class CeleryWorker:
    proc: subprocess.Popen[bytes]
    nodename: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text("utf-8", "replace")

    def is_alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.proc.wait(timeout)
        return None

    def kill_all(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


@pytest.fixture
def celery_workers(rig: Rig) -> Iterator[list[CeleryWorker]]:
    started: list[CeleryWorker] = []
    yield started
    for w in started:
        w.stop()


def start_celery(
    rig: Rig,
    into: list[CeleryWorker],
    concurrency: int = 2,
    prefetch: int = 1,
    vt: float | None = VT,
    pool: str = "prefork",
) -> CeleryWorker:
    """``celery -A tests.faults.celery_fault_app worker`` on the rig's broker; returns once it
    answers ``ping``."""
    name = f"celery{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    log = rig.tmp / f"{name.split('@')[0]}.log"
    cmd = [
        sys.executable, "-m", "celery", "-A", "tests.faults.celery_fault_app", "worker",
        "-P", pool, "-c", str(concurrency), "--prefetch-multiplier", str(prefetch),
        "--without-mingle", "--without-gossip", "-Q", "celery", "-n", name, "-l", "info",
    ]  # fmt: skip
    env = worker_env(rig.broker.url(), rig.ledger_server.url(), vt)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    w = CeleryWorker(proc, name, log)
    into.append(w)
    probe = rig.app(vt=vt)
    deadline = time.monotonic() + START_TIMEOUT_S * 2
    while time.monotonic() < deadline:
        if not w.is_alive():
            raise AssertionError(f"celery worker exited:\n{w.output()[-4000:]}")
        replies = probe.control.inspect(destination=[name], timeout=0.5).ping()
        if replies and name in replies:
            return w
    raise AssertionError(f"celery worker did not answer ping:\n{w.output()[-4000:]}")


def chord_keys(rig: Rig) -> dict[str, bytes | None]:
    client = rig.broker.client()
    try:
        return {
            k.decode(): client.get(k) if k.endswith(b".c") else b"<" + client.type(k) + b">"
            for k in client.scan_iter("celery-taskset-meta-*", count=1000)
        }
    finally:
        client.close()


def ran_on_celery(rig: Rig, ids: list[str]) -> int:
    vals = rig.ledger.client.hmget("ran_on_celery", ids)
    return sum(int(v or 0) for v in vals)


# -- T28 ---------------------------------------------------------------------------------------
@pytest.mark.timeout(180)
@pytest.mark.parametrize("fleet", ["tq-only", "celery-and-tq"])
def test_chord_with_a_header_task_that_runs_twice_calls_back_exactly_once(
    rig: Rig, celery_workers: list[CeleryWorker], fleet: str, figures: dict[str, object]
) -> None:
    """T28: 10 header tasks; #0 (fast) and #9 (slow, finishes after the chord fired) die after
    their part is recorded and before the ack. On tq they are requeued and run again; on
    Celery 5.7 the stored SUCCESS is found and the message acked (1 execution). Callback
    exactly once, the sum right, nothing of the chord left but ``.c = "done"``."""
    app = rig.app(vt=VT, transport=TRANSPORT)
    rig.worker(concurrency=2, vt=VT, transport=TRANSPORT)
    if fleet == "celery-and-tq":
        start_celery(rig, celery_workers, concurrency=2)
    else:
        rig.worker(concurrency=2, vt=VT, transport=TRANSPORT)
    header = [
        app.signature(
            "fault.chord_part",
            args=(i,),
            kwargs={"seconds": 2.0 if i == 9 else 0.2, "die": i in (0, 9)},
        )
        for i in range(CHORD_SIZE)
    ]
    body = app.signature("fault.chord_body")
    res = tq.chord(header, body)()
    group_id = res.parent.id if res.parent is not None else None
    header_ids = [r.id for r in res.parent.results] if res.parent is not None else []
    assert len(header_ids) == CHORD_SIZE
    dying = [header_ids[0], header_ids[9]]

    def killed_where() -> dict[str, str]:
        raw = rig.ledger.client.hgetall("killed_after_success")
        return {k.decode(): v.decode().split(":")[0] for k, v in raw.items()}

    def settled() -> bool:
        where = killed_where()
        return (
            len(where) == 2
            and all(rig.ledger.exec_of(i) >= 2 for i, side in where.items() if side == "tq")
            and all(rig.ledger.done_of(i) >= 1 for i in header_ids)
            and rig.ledger.done_of(res.id) >= 1
        )

    with contextlib.suppress(AssertionError):
        wait_until(settled, 90, "the chord and the re-runs", interval=0.1)
    assert res.get(timeout=30) == sum(range(CHORD_SIZE))
    # settle: the re-run of #9 is acked, the joining worker's cleanup is done
    wait_until(lambda: rig.unacked(app) == 0 and rig.queue_length(app) == 0, 30, "the acks")
    wait_until(
        lambda: set(chord_keys(rig)) <= {f"celery-taskset-meta-{group_id}.c"},
        15,
        f"the chord's keys to go: {chord_keys(rig)}",
    )
    time.sleep(1.0)  # a second callback, if any, would show in the ledger now
    killed_on = killed_where()
    killed = set(killed_on)
    leftover = chord_keys(rig)
    callback_runs = rig.ledger.exec_of(res.id)
    why = f"killed={killed_on} leftover={leftover} dying={dying}\n{rig.logs()}\n" + "".join(
        f"--- {c.nodename} ---\n{c.output()[-4000:]}" for c in celery_workers
    )
    assert killed == set(dying), why
    assert callback_runs == 1, why
    # tq requeues a part whose process died after success (reject_on_worker_lost) and the
    # chord's .d set absorbs the second record; Celery 5.7 reads the stored SUCCESS instead,
    # logs "succeeded before the worker was lost" and acks: 1 execution
    expected = [2 if killed_on[i] == "tq" else 1 for i in dying]
    assert [rig.ledger.exec_of(i) for i in dying] == expected, why
    assert all(rig.ledger.exec_of(i) == 1 for i in header_ids[1:9]), why
    assert leftover == {f"celery-taskset-meta-{group_id}.c": b"done"}, why
    figures.update(
        row="T28",
        fleet=fleet,
        header_executions=sum(rig.ledger.execs(header_ids)),
        header_runs_on_celery=ran_on_celery(rig, header_ids),
        first_runs_killed_on=sorted(killed_on.values()),
        callback_executions=callback_runs,
        callback_ran_on="celery" if ran_on_celery(rig, [res.id]) else "tq",
        leftover_chord_keys=sorted(leftover),
    )


# -- T32 ---------------------------------------------------------------------------------------
def _mixed_pair(
    rig: Rig, celery_workers: list[CeleryWorker], prefetch: int
) -> tuple[App, object, CeleryWorker]:
    app = rig.app(vt=VT, transport=TRANSPORT)
    tq_worker = rig.worker(
        concurrency=2, vt=VT, transport=TRANSPORT, args=["--prefetch-multiplier", str(prefetch)]
    )
    cel = start_celery(rig, celery_workers, concurrency=2, prefetch=prefetch)
    return app, tq_worker, cel


@pytest.mark.timeout(180)
@pytest.mark.parametrize("acks_late", [False, True], ids=["early-ack", "acks-late"])
@pytest.mark.parametrize("victim", ["celery", "tq"])
def test_mixed_fleet_sigkill_of_one_worker_mid_drain(
    rig: Rig,
    celery_workers: list[CeleryWorker],
    victim: str,
    acks_late: bool,
    figures: dict[str, object],
) -> None:
    """T32 x T05: both workers -c 2, prefetch 10, 60 x 0.25 s tasks; 3 s in, SIGKILL the
    victim's controller and children. The survivor restores what the victim held (after the
    10 s visibility timeout) and runs it. Early ack: lost <= running on the victim (2), 0 dup.
    acks_late: 0 lost, dup <= 2."""
    task = "fault.work_late" if acks_late else "fault.work"
    app, tq_worker, cel = _mixed_pair(rig, celery_workers, prefetch=10)
    ids = publish_many(app, task, 60, kwargs={"seconds": TASK_S})
    wait_until(lambda: rig.ledger.exec_count() >= 4, 30, "both workers to start")
    time.sleep(3.0)
    held = rig.unacked(app)
    target = cel if victim == "celery" else tq_worker
    target.kill_all()  # type: ignore[attr-defined]
    killed_at = time.monotonic()
    running = rig.ledger.exec_count() - rig.ledger.done_count()
    counts = rig.drain(app, ids, 90)
    drained_s = time.monotonic() - killed_at
    on_celery = ran_on_celery(rig, ids)
    why = (
        f"{counts.line()} running={running} held={held} on_celery={on_celery}\n{rig.logs()}\n"
        f"--- celery ---\n{cel.output()[-3000:]}"
    )
    if acks_late:
        assert counts.lost == 0, why
        assert counts.dup <= 2, why
    else:
        assert counts.lost <= 2, why
        assert counts.dup == 0, why
    assert counts.stranded == 0 and counts.queued == 0, why
    assert 0 < on_celery < len(ids), why  # both sides ran tasks
    survivor = tq_worker if victim == "celery" else cel
    assert survivor.is_alive(), why  # type: ignore[attr-defined]
    figures.update(
        row="T32",
        fault="sigkill",
        victim=victim,
        acks_late=acks_late,
        held_at_kill=held,
        running_at_kill=running,
        ran_on_celery=on_celery,
        time_to_full_drain_s=round(drained_s, 1),
        **counts.figures(),
    )


@pytest.mark.timeout(180)
@pytest.mark.parametrize("acks_late", [False, True], ids=["early-ack", "acks-late"])
@pytest.mark.parametrize("victim", ["celery", "tq"])
def test_mixed_fleet_warm_stop_of_one_worker_mid_drain(
    rig: Rig,
    celery_workers: list[CeleryWorker],
    victim: str,
    acks_late: bool,
    figures: dict[str, object],
) -> None:
    """T32 x T07: both workers -c 2, prefetch 10, 60 x 0.25 s tasks; 2 s in, SIGTERM the
    victim: it finishes its running tasks, restores what it prefetched, exits 0; the other
    worker runs the rest: 0 lost, 0 dup, nothing stranded."""
    task = "fault.work_late" if acks_late else "fault.work"
    app, tq_worker, cel = _mixed_pair(rig, celery_workers, prefetch=10)
    ids = publish_many(app, task, 60, kwargs={"seconds": TASK_S})
    wait_until(lambda: rig.ledger.exec_count() >= 4, 30, "both workers to start")
    time.sleep(2.0)
    target = cel if victim == "celery" else tq_worker
    target.signal(signal.SIGTERM)  # type: ignore[attr-defined]
    sent_at = time.monotonic()
    code = target.wait(30)  # type: ignore[attr-defined]
    exit_s = time.monotonic() - sent_at
    counts = rig.drain(app, ids, 90)
    on_celery = ran_on_celery(rig, ids)
    out = target.output()  # type: ignore[attr-defined]
    why = f"{counts.line()} code={code} on_celery={on_celery}\n{out[-3000:]}\n{rig.logs()}"
    assert code == 0, why
    assert counts.lost == 0 and counts.dup == 0, why
    assert counts.stranded == 0 and counts.queued == 0, why
    assert 0 < on_celery < len(ids), why
    restored = [line for line in out.splitlines() if "Restoring" in line]
    figures.update(
        row="T32",
        fault="sigterm",
        victim=victim,
        acks_late=acks_late,
        exit_code=code,
        exit_after_sigterm_s=round(exit_s, 2),
        restored_line=restored[-1].split("] ")[-1] if restored else None,
        ran_on_celery=on_celery,
        **counts.figures(),
    )


@pytest.mark.timeout(240)
def test_mixed_fleet_through_a_broker_restart_mid_drain(
    rig: Rig, celery_workers: list[CeleryWorker], figures: dict[str, object]
) -> None:
    """T32 x T10: a Celery 5.7 and a tq worker (-c 2, prefetch 4) drain 400 x 0.05 s tasks;
    the broker is SHUT DOWN mid-drain and restarted from its AOF 3 s later. Both reconnect;
    with the mixed-fleet visibility timeout (10 s) the sweeps give back what a worker lost
    track of (Celery strands messages whose ack failed during the outage, F6), so the pair
    ends with 0 lost, 0 stranded, duplicates within what was in flight."""
    app, tq_worker, cel = _mixed_pair(rig, celery_workers, prefetch=4)
    ids = publish_many(app, "fault.work", 400, kwargs={"seconds": 0.05})
    wait_until(lambda: rig.ledger.done_count() >= 60, 60, "the drain to be under way")
    in_flight = rig.unacked(app) + 4
    rig.broker.shutdown()
    time.sleep(3.0)
    rig.broker.start()
    up = time.monotonic()
    counts = rig.drain(app, ids, 120)
    drained_s = time.monotonic() - up
    on_celery = ran_on_celery(rig, ids)
    why = (
        f"{counts.line()} in_flight={in_flight} on_celery={on_celery}\n{rig.logs()}\n"
        f"--- celery ---\n{cel.output()[-3000:]}"
    )
    assert counts.lost == 0, why
    assert counts.stranded == 0 and counts.queued == 0, why
    assert counts.dup <= in_flight, why
    assert tq_worker.is_alive() and cel.is_alive(), why  # type: ignore[attr-defined]
    assert 0 < on_celery < len(ids), why
    figures.update(
        row="T32",
        fault="broker-restart",
        in_flight=in_flight,
        ran_on_celery=on_celery,
        drained_after_restart_s=round(drained_s, 1),
        **counts.figures(),
    )
