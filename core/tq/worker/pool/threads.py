"""The threads pool: N threads in the worker process, for I/O-bound tasks.

Time limits cannot stop a thread; they are logged and not enforced (as in Celery).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from typing import Any

from tq.worker.pool import ChildFigures, Done, Job, Outcome, PoolOptions, resolve


class ThreadPool:
    name = "threads"

    def __init__(self, options: PoolOptions) -> None:
        self.options = options
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._outcomes: queue.Queue[Outcome] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._busy: dict[int, tuple[Job, float]] = {}
        self._done_count: dict[int, int] = {}
        self._target = options.concurrency
        self._retire = 0
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        self._ctx: Any = None
        self._run: Any = None
        self._lock = threading.Lock()
        self._started = time.time()
        self._pending = 0

    def start(self) -> None:
        self._ctx = resolve(self.options.initializer)(*self.options.initargs)
        self._run = resolve(self.options.target)
        for _ in range(self._target):
            self._spawn()

    def _spawn(self) -> None:
        t = threading.Thread(target=self._loop, name=f"tq-thread-{len(self._threads)}", daemon=True)
        self._threads.append(t)
        t.start()

    def _loop(self) -> None:
        ident = threading.get_ident()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                self._busy[ident] = (job, time.monotonic())
            try:
                value = self._run(self._ctx, job.payload)
            except Exception as exc:
                value = ("error", repr(exc))
            with self._lock:
                self._busy.pop(ident, None)
                self._done_count[ident] = self._done_count.get(ident, 0) + 1
                self._pending -= 1
            self._outcomes.put(Done(job.id, value, os.getpid()))
            os.write(self._wfd, b"x")

    def size(self) -> int:
        return self._target

    def idle(self) -> int:
        with self._lock:
            return max(self._target - self._pending, 0)

    @property
    def recycled(self) -> int:
        return 0

    def busy_jobs(self) -> list[str]:
        with self._lock:
            return [j.id for j, _ in self._busy.values()]

    def submit(self, job: Job) -> None:
        with self._lock:
            self._pending += 1
        self._jobs.put(job)

    def waitables(self) -> list[Any]:
        return [self._rfd]

    def collect(self, ready: list[Any]) -> list[Outcome]:
        with contextlib.suppress(BlockingIOError):
            os.read(self._rfd, 65536)
        out: list[Outcome] = []
        while True:
            try:
                out.append(self._outcomes.get_nowait())
            except queue.Empty:
                return out

    def check(self, now: float | None = None) -> list[Outcome]:
        return []

    def next_deadline(self) -> float | None:
        return None

    def terminate_job(self, job_id: str, signum: int) -> bool:
        return False

    def grow(self, n: int = 1) -> int:
        for _ in range(n):
            self._spawn()
        self._target += n
        return self._target

    def shrink(self, n: int = 1) -> int:
        n = min(n, self._target - 1)
        for _ in range(max(n, 0)):
            self._jobs.put(None)
        self._target -= max(n, 0)
        return self._target

    def figures(self) -> list[ChildFigures]:
        mono = time.monotonic()
        with self._lock:
            busy = dict(self._busy)
            done = dict(self._done_count)
        out = []
        for i, t in enumerate(self._threads):
            if not t.is_alive():
                continue
            job, started = busy.get(t.ident or 0, (None, 0.0))
            out.append(
                ChildFigures(
                    i,
                    os.getpid(),
                    "busy" if job else "idle",
                    job.id if job else None,
                    job.label if job else None,
                    (mono - started) if job else None,
                    self._started,
                    0.0,
                    0,
                    done.get(t.ident or 0, 0),
                )
            )
        return out

    def stop(self, timeout: float = 5.0) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(deadline - time.monotonic(), 0.01))
        self.kill()

    def kill(self) -> None:
        for fd in (self._rfd, self._wfd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._rfd = self._wfd = -1
