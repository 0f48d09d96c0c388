"""Huey side of the benchmark: a RedisHuey (blocking BRPOP dequeue, Huey's default) and two
no-op tasks.

Huey stores a result only when the task returns something other than None (``store_none`` is
off by default), so ``noop`` returns 1 and ``noop_ignored`` returns None: that is Huey's own way
to skip the result write. ``BENCH_HUEY_NOTIFY=1`` turns on ``notify_result`` (a BLPOP wake-up
for ``get(blocking=True)``), which bench.py uses for the latency run only, since it costs the
worker an extra pipeline per result.

Worker: ``huey_consumer bench_huey.huey -w 2 -k process``.
"""

from __future__ import annotations

import os

from huey import RedisHuey

huey = RedisHuey(
    "bench",
    url=os.environ.get("BENCH_HUEY_URL", "redis://127.0.0.1:6379/5"),
    notify_result=os.environ.get("BENCH_HUEY_NOTIFY") == "1",
)


@huey.task(name="bench.noop")
def noop() -> int:
    """No work; its result (1) is stored."""
    return 1


@huey.task(name="bench.noop_ignored")
def noop_ignored() -> None:
    """No work; returns None, so Huey stores nothing."""
    return None
