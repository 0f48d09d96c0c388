"""Prefork pool: N child processes over pipes.

The supervisor replaces a child that dies, signals the soft time limit (SIGUSR1), kills a
child past its hard limit (SIGKILL), replaces children that leave to recycle
(``max_tasks_per_child`` / ``max_memory_per_child``) and grows or shrinks on command; shrinking
retires idle children first and busy ones after their job. It is driven by its owner's loop:
``waitables()`` for ``multiprocessing.connection.wait``, then ``collect()`` and ``check()``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from tq.worker.pool import ChildFigures, Done, Job, Lost, Outcome, PoolOptions, ipc
from tq.worker.pool.child import child_main

logger = logging.getLogger(__name__)

#: Seconds to wait for children to leave on stop before they are killed.
STOP_GRACE_S = 5.0


@dataclass(slots=True)
class _Child:
    index: int
    process: Any
    conn: Connection
    started_at: float
    job: Job | None = None
    job_started: float = 0.0
    soft_sent: bool = False
    kill_reason: str | None = None
    kill_signal: int | None = None
    tasks_done: int = 0
    retiring: bool = False
    exiting: bool = False
    dead: bool = False  # its pipe broke: the process is gone and waits to be reaped
    ps: Any = field(default=None)

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)


class Supervisor:
    """The prefork pool."""

    name = "prefork"

    def __init__(self, options: PoolOptions) -> None:
        self.options = options
        self._ctx = mp.get_context("fork")
        self._children: list[_Child] = []
        self._target_size = options.concurrency
        self._next_index = 0
        self._recycled = 0
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        for _ in range(self._target_size):
            self._spawn()

    def _spawn(self) -> _Child:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        o = self.options
        process = self._ctx.Process(
            target=child_main,
            args=(
                child_conn,
                o.initializer,
                o.initargs,
                o.target,
                o.max_tasks_per_child,
                o.max_memory_per_child,
            ),
            name=f"tq-child-{self._next_index}",
            daemon=False,
        )
        process.start()
        child_conn.close()
        child = _Child(self._next_index, process, parent_conn, time.time())
        self._next_index += 1
        self._children.append(child)
        if o.on_child_start is not None:
            o.on_child_start(child.pid)
        return child

    def stop(self, timeout: float = STOP_GRACE_S) -> None:
        """Ask every child to leave, wait up to ``timeout``, then kill what is left."""
        self._stopping = True
        for child in self._children:
            self._send_stop(child)
        deadline = time.monotonic() + timeout
        for child in self._children:
            child.process.join(max(deadline - time.monotonic(), 0.01))
        self.kill()

    def kill(self) -> None:
        self._stopping = True
        for child in self._children:
            if child.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
            child.process.join(1.0)
            child.conn.close()
        self._children.clear()

    # -- sizes --------------------------------------------------------------------------------
    def size(self) -> int:
        return sum(1 for c in self._children if not c.retiring)

    def idle(self) -> int:
        return sum(1 for c in self._children if self._takes_jobs(c))

    @staticmethod
    def _takes_jobs(child: _Child) -> bool:
        return child.job is None and not (child.retiring or child.exiting or child.dead)

    @property
    def recycled(self) -> int:
        return self._recycled

    def busy_jobs(self) -> list[str]:
        return [c.job.id for c in self._children if c.job is not None]

    def grow(self, n: int = 1) -> int:
        for _ in range(max(n, 0)):
            self._spawn()
        self._target_size += max(n, 0)
        return self.size()

    def shrink(self, n: int = 1) -> int:
        """Retire ``n`` children: idle ones at once, busy ones after their job."""
        n = min(n, self.size() - 1)
        if n <= 0:
            return self.size()
        active = [c for c in self._children if not c.retiring]
        ordered = sorted(active, key=lambda c: c.job is not None)
        for child in ordered[:n]:
            child.retiring = True
            if child.job is None:
                self._send_stop(child)
        self._target_size -= n
        return self.size()

    # -- work ---------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Hand ``job`` to an idle child. A child that died since it was last reaped (its
        pipe is broken) is skipped; if no live idle child is left, the job stays with the dead
        one and is reported ``Lost`` when it is reaped, so it is never silently dropped."""
        dead: _Child | None = None
        for child in self._children:
            if not self._takes_jobs(child):
                continue
            try:
                child.conn.send_bytes(ipc.dumps((job.id, job.payload)))
            except OSError as exc:
                logger.warning("Pool child %d (pid %d) is gone: %s", child.index, child.pid, exc)
                child.dead = True
                dead = dead or child
                continue
            self._assign(child, job)
            return
        if dead is None:
            raise RuntimeError("no idle child: check idle() before submit()")
        self._assign(dead, job)

    @staticmethod
    def _assign(child: _Child, job: Job) -> None:
        child.job = job
        child.job_started = time.monotonic()
        child.soft_sent = False

    def waitables(self) -> list[Any]:
        out: list[Any] = []
        for child in self._children:
            out.append(child.conn)
            out.append(child.process.sentinel)
        return out

    def collect(self, ready: list[Any]) -> list[Outcome]:
        """Read outcomes from ready pipes and reap children that ended."""
        outcomes: list[Outcome] = []
        ready_set = set(ready)
        for child in list(self._children):
            if child.conn in ready_set:
                self._read(child, outcomes)
            if child.process.sentinel in ready_set:
                self._reap(child, outcomes)
        return outcomes

    def _read(self, child: _Child, outcomes: list[Outcome]) -> None:
        while True:
            try:
                if not child.conn.poll():
                    return
                job_id, value, exiting = ipc.loads(child.conn.recv_bytes())
            except (EOFError, OSError):
                return
            job = child.job
            child.job = None
            child.tasks_done += 1
            if job is not None and job.id == job_id:
                outcomes.append(Done(job_id, value, child.pid))
            if exiting:
                child.exiting = True
            elif child.retiring or self._stopping:
                self._send_stop(child)

    def _reap(self, child: _Child, outcomes: list[Outcome]) -> None:
        child.process.join(0.5)
        if child.process.is_alive():
            return
        self._read(child, outcomes)
        self._children.remove(child)
        child.conn.close()
        code = child.process.exitcode
        if child.job is not None:
            signum = -code if code is not None and code < 0 else child.kill_signal
            reason = child.kill_reason or "died"
            outcomes.append(Lost(child.job.id, reason, child.pid, code, signum))
            logger.error(
                "Pool child %d (pid %d) ended with exit code %s while running %s (%s)",
                child.index,
                child.pid,
                code,
                child.job.label or child.job.id,
                reason,
            )
        if child.exiting and not child.retiring:
            self._recycled += 1
        if self._stopping:
            return
        if not child.retiring and self.size() < self._target_size:
            self._spawn()

    def check(self, now: float | None = None) -> list[Outcome]:
        """Apply soft and hard time limits to running jobs."""
        mono = time.monotonic()
        for child in self._children:
            job = child.job
            if job is None or child.kill_reason:
                continue
            elapsed = mono - child.job_started
            if job.soft_time_limit and not child.soft_sent and elapsed >= job.soft_time_limit:
                child.soft_sent = True
                self._signal(child, signal.SIGUSR1)
            if job.hard_time_limit and elapsed >= job.hard_time_limit:
                child.kill_reason = "timeout"
                child.kill_signal = signal.SIGKILL
                logger.error(
                    "Hard time limit (%ss) exceeded for %s[%s]: killing pid %d",
                    job.hard_time_limit,
                    job.label,
                    job.id,
                    child.pid,
                )
                self._signal(child, signal.SIGKILL)
        return []

    def next_deadline(self) -> float | None:
        """Seconds until the nearest time limit passes, if any job has one."""
        mono = time.monotonic()
        best: float | None = None
        for child in self._children:
            job = child.job
            if job is None:
                continue
            for limit, done in (
                (job.soft_time_limit, child.soft_sent),
                (job.hard_time_limit, False),
            ):
                if limit and not done:
                    left = child.job_started + limit - mono
                    best = left if best is None else min(best, left)
        return best

    def terminate_job(self, job_id: str, signum: int) -> bool:
        for child in self._children:
            if child.job is not None and child.job.id == job_id:
                child.kill_reason = "terminated"
                child.kill_signal = signum
                self._signal(child, signum)
                return True
        return False

    def _signal(self, child: _Child, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)

    def _send_stop(self, child: _Child) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            child.conn.send_bytes(ipc.STOP)

    # -- figures ------------------------------------------------------------------------------
    def figures(self) -> list[ChildFigures]:
        import psutil

        out: list[ChildFigures] = []
        mono = time.monotonic()
        for child in list(self._children):
            cpu, rss = 0.0, 0
            try:
                if child.ps is None:
                    child.ps = psutil.Process(child.pid)
                    child.ps.cpu_percent(None)
                cpu = child.ps.cpu_percent(None)
                rss = child.ps.memory_info().rss
            except (psutil.Error, OSError):
                pass
            job = child.job  # read once: the controller thread may change it
            state = "busy" if job else "idle"
            if child.retiring:
                state = "retiring"
            out.append(
                ChildFigures(
                    index=child.index,
                    pid=child.pid,
                    state=state,
                    job_id=job.id if job else None,
                    label=job.label if job else None,
                    job_runtime=(mono - child.job_started) if job else None,
                    started_at=child.started_at,
                    cpu_percent=cpu,
                    rss=rss,
                    tasks_done=child.tasks_done,
                )
            )
        return out
