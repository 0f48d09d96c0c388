"""Shutdown by signal of a headless worker (``tq-console --worker``) in a subprocess.

SIGTERM: warm shutdown. Running tasks finish, prefetched ones go back to their queue, exit 0.
A second SIGTERM while waiting: cold shutdown. Children are killed, and running acks_late
tasks go back to the queue, so nothing unfinished is acknowledged.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests import runtime_tasks as tasks
from tests.integration.runtime_fixtures import (
    Ledger,
    queue_length,
    unacked_by_task,
    wait_until,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], nodename: str, log: Path) -> None:
        self.proc = proc
        self.nodename = nodename
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker did not exit within {timeout}s; log:\n{self.output()[-3000:]}"
            ) from None


@pytest.fixture
def start_worker(app_conf: Any, ledger: Ledger, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Starts ``tq-console --worker -A tests.runtime_tasks:app`` and waits for its ping; kills
    its process group in teardown if it is still there."""
    started: list[Worker] = []

    def start(concurrency: int = 2) -> Worker:
        nodename = f"sub{len(started)}-{os.getpid()}@%h"
        log = tmp_path / f"worker{len(started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tq_console",
                    "--worker",
                    "-A",
                    "tests.runtime_tasks:app",
                    "-c",
                    str(concurrency),
                    "-n",
                    nodename,
                    "-l",
                    "INFO",
                ],
                cwd=ROOT,
                env=dict(os.environ),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(proc, nodename, log)
        started.append(worker)
        name = nodename.replace("%h", socket.gethostname())

        def answers() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{worker.output()[-3000:]}")
            return bool(tasks.app.control.ping(destination=[name], timeout=0.3))

        wait_until(answers, 30, f"{name} to answer ping")
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait(10)


@pytest.mark.timeout(60)
def test_sigterm_warm_shutdown_finishes_running_tasks_and_restores_prefetched_ones(
    start_worker: Callable[..., Worker], ledger: Ledger, broker: Any
) -> None:
    worker = start_worker(concurrency=2)
    running = [tasks.late_sleeper.delay(1.5) for _ in range(2)]
    for r in running:
        ledger.wait_started(r.id)
    queued = [tasks.noop.delay(i) for i in range(4)]
    wait_until(
        lambda: set(unacked_by_task(broker)) >= {r.id for r in queued} and queue_length() == 0,
        10,
        "the 4 queued tasks prefetched by the worker",
    )

    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait_exit(30) == 0
    assert all(ledger.dones(r.id) == 1 for r in running), "running tasks were cut short"
    assert all(r.get(timeout=5) == 1.5 for r in running)
    assert all(ledger.execs(r.id) == 0 for r in queued)
    assert queue_length() == 4, "prefetched tasks were not given back"
    assert not unacked_by_task(broker)
    log = worker.output()
    assert "Warm shutdown" in log
    assert "Restoring 4 unacknowledged message(s)" in log


@pytest.mark.timeout(60)
def test_second_sigterm_cold_shutdown_requeues_the_running_acks_late_task(
    start_worker: Callable[..., Worker], ledger: Ledger, broker: Any
) -> None:
    worker = start_worker(concurrency=1)
    running = tasks.late_sleeper.delay(tasks.LONG_S)
    ledger.wait_started(running.id)

    worker.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "Warm shutdown" in worker.output(), 10, "the warm shutdown log line")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait_exit(30) == 0
    assert ledger.dones(running.id) == 0
    assert queue_length() == 1, "the unfinished acks_late task was not put back"
    assert not unacked_by_task(broker)
    assert "cold shutdown" in worker.output().lower()

    # A new worker runs it to completion.
    start_worker(concurrency=1)
    ledger.wait_started(running.id, times=2)
