"""Demo tasks and a load generator for ``tq-console --demo``.

The tasks cover what every panel shows: fast and slow work, a flaky task that retries, a
rate-limited one, ETA-scheduled sends, one that leaks memory (so recycling shows) and one that
runs into its time limits.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from typing import Any

from tq import App

logger = logging.getLogger(__name__)

app = App("tq_demo")
app.conf.update(
    task_default_queue="celery",
    worker_max_memory_per_child=400_000,  # KiB: the leaky task gets its child recycled
    beat_schedule={
        "heartbeat-every-10s": {"task": "demo.fast", "schedule": 10.0, "args": (1, 2)},
    },
)

#: Memory the leaky task keeps per child process (grows until the child is recycled).
_LEAK: list[bytes] = []


@app.task(name="demo.fast")
def fast(x: int, y: int) -> int:
    return x + y


@app.task(name="demo.slow")
def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="demo.flaky", bind=True, max_retries=3, default_retry_delay=2)
def flaky(self: Any, n: int) -> int:
    if random.random() < 0.4:
        raise self.retry(exc=ConnectionError(f"upstream hiccup on item {n}"))
    return n


@app.task(name="demo.rate_limited", rate_limit="30/m")
def rate_limited(n: int) -> int:
    return n * n


@app.task(name="demo.failing")
def failing(code: int) -> None:
    raise ValueError(f"demo failure {code}")


@app.task(name="demo.leaky")
def leaky(kib: int) -> int:
    _LEAK.append(b"x" * kib * 1024)
    return sum(len(b) for b in _LEAK)


@app.task(name="demo.timeout", soft_time_limit=2, time_limit=4)
def timeout(seconds: float) -> str:
    time.sleep(seconds)
    return "finished in time"


class LoadGenerator:
    """Sends a realistic, varying mix of demo tasks until stopped."""

    def __init__(self, demo_app: App = app, rate: float = 8.0) -> None:
        self.app = demo_app
        self.rate = rate
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tq-demo-load", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            phase = math.sin((time.monotonic() - start) / 20.0)
            per_second = max(self.rate * (1.2 + phase), 1.0)
            try:
                self.send_one()
            except Exception as exc:  # the broker may be gone during shutdown
                logger.warning("Demo load generator could not send: %s", exc)
                self._stop.wait(2.0)
            self._stop.wait(1.0 / per_second)

    def send_one(self) -> None:
        roll = random.random()
        n = self.sent
        self.sent += 1
        if roll < 0.45:
            fast.delay(n, n + 1)
        elif roll < 0.6:
            slow.delay(round(random.uniform(0.5, 4.0), 1))
        elif roll < 0.72:
            flaky.delay(n)
        elif roll < 0.8:
            rate_limited.delay(n)
        elif roll < 0.86:
            fast.apply_async((n, 0), countdown=random.randint(5, 90))
        elif roll < 0.91:
            failing.delay(n)
        elif roll < 0.96:
            leaky.delay(2048)
        else:
            timeout.delay(random.choice([1.0, 3.0, 6.0]))
