"""The result backend: Celery's Redis result layout, pub/sub wake-ups, group and chord keys."""

from __future__ import annotations

from tq.backend.redis import RedisBackend

__all__ = ["RedisBackend"]
