"""The solo pool: jobs run in the calling thread, one at a time (for debugging)."""

from __future__ import annotations

import os
import time
from typing import Any

from tq.worker.pool import ChildFigures, Done, Job, Outcome, PoolOptions, resolve


class SoloPool:
    """Runs each job inside ``submit``; time limits are not enforced."""

    name = "solo"

    def __init__(self, options: PoolOptions) -> None:
        self.options = options
        self._ctx: Any = None
        self._run: Any = None
        self._done: list[Outcome] = []
        self._current: Job | None = None
        self._started = time.time()
        self._tasks = 0

    def start(self) -> None:
        self._ctx = resolve(self.options.initializer)(*self.options.initargs)
        self._run = resolve(self.options.target)

    def size(self) -> int:
        return 1

    def idle(self) -> int:
        return 0 if self._current else 1

    @property
    def recycled(self) -> int:
        return 0

    def busy_jobs(self) -> list[str]:
        return [self._current.id] if self._current else []

    def submit(self, job: Job) -> None:
        self._current = job
        try:
            value = self._run(self._ctx, job.payload)
        except Exception as exc:
            value = ("error", repr(exc))
        finally:
            self._current = None
        self._tasks += 1
        self._done.append(Done(job.id, value, os.getpid()))

    def waitables(self) -> list[Any]:
        return []

    def collect(self, ready: list[Any]) -> list[Outcome]:
        done, self._done = self._done, []
        return done

    def check(self, now: float | None = None) -> list[Outcome]:
        return []

    def next_deadline(self) -> float | None:
        return None

    def terminate_job(self, job_id: str, signum: int) -> bool:
        return False

    def grow(self, n: int = 1) -> int:
        return 1

    def shrink(self, n: int = 1) -> int:
        return 1

    def figures(self) -> list[ChildFigures]:
        job = self._current
        return [
            ChildFigures(
                0,
                os.getpid(),
                "busy" if job else "idle",
                job.id if job else None,
                job.label if job else None,
                None,
                self._started,
                0.0,
                0,
                self._tasks,
            )
        ]

    def stop(self, timeout: float = 0) -> None:
        pass

    def kill(self) -> None:
        pass
