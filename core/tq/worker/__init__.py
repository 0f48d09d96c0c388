"""The worker: Runtime (controller, pool, consumer, timer, buckets, control, events)."""

from __future__ import annotations

from tq.worker.runtime import Runtime, RuntimeOptions

__all__ = ["Runtime", "RuntimeOptions"]
