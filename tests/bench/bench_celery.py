"""Celery side of the benchmark: one Celery app with Celery's defaults and two no-op tasks.

Worker: ``celery -A bench_celery worker -c 2 -P prefork -l WARNING``.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery(
    "bench_celery",
    broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/3"),
    backend=os.environ.get("BENCH_RESULT_URL", "redis://127.0.0.1:6379/4"),
)
app.conf.broker_connection_retry_on_startup = True  # silences a start-up deprecation warning


@app.task(name="bench.noop")
def noop() -> int:
    """No work; its result (1) is stored."""
    return 1


@app.task(name="bench.noop_ignored", ignore_result=True)
def noop_ignored() -> int:
    """No work; no result is stored."""
    return 1
