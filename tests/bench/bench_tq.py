"""tq side of the benchmark: one App and two no-op tasks.

``BENCH_BROKER_URL`` / ``BENCH_RESULT_URL`` name the private server's databases (bench.py sets
them for the worker and the producer alike). Worker: ``tq-console --worker -A bench_tq:app``.
"""

from __future__ import annotations

import os

from tq import App

app = App(
    "bench_tq",
    broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/1"),
    backend=os.environ.get("BENCH_RESULT_URL", "redis://127.0.0.1:6379/2"),
)


@app.task(name="bench.noop")
def noop() -> int:
    """No work; its result (1) is stored."""
    return 1


@app.task(name="bench.noop_ignored", ignore_result=True)
def noop_ignored() -> int:
    """No work; no result is stored."""
    return 1
