"""Per-task token buckets for rate limits: ``"10/s"``, ``"100/m"``, ``"1000/h"`` or a number
(per second). One bucket per task type; rates can change at runtime."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tq.exceptions import ConfigurationError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(rate: str | float | int | None) -> float:
    """Tasks per second for a rate limit string; 0 means no limit.

    Raises:
        ConfigurationError: the string is not ``N``, ``N/s``, ``N/m`` or ``N/h``.
    """
    if rate is None or rate == "":
        return 0.0
    if isinstance(rate, int | float):
        return float(rate)
    text = str(rate).strip()
    number, _, unit = text.partition("/")
    try:
        value = float(number)
    except ValueError:
        raise ConfigurationError(
            f"invalid rate limit {rate!r}: use a number with /s, /m or /h, e.g. '10/s'"
        ) from None
    if unit and unit[0] not in _UNITS:
        raise ConfigurationError(f"invalid rate limit unit in {rate!r}: use s, m or h")
    return value / _UNITS[unit[0]] if unit else value


@dataclass(slots=True)
class TokenBucket:
    """Refills at ``rate`` tokens per second up to ``capacity``; starts full."""

    rate: float
    capacity: float
    label: str
    tokens: float = 0.0
    stamp: float = 0.0
    waiting: deque[Any] = field(default_factory=deque)

    def _refill(self, now: float) -> None:
        if self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def level(self, now: float) -> float:
        self._refill(now)
        return self.tokens

    def wait_time(self, now: float) -> float:
        """Seconds until a token is available."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


class Buckets:
    """The buckets of every rate-limited task type."""

    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}

    def set_rate(self, task_name: str, rate: str | float | None, now: float) -> TokenBucket | None:
        """Set (or clear, with 0/None) the rate of ``task_name``; waiting items are kept."""
        per_second = parse_rate(rate)
        old = self._buckets.get(task_name)
        if per_second <= 0:
            self._buckets.pop(task_name, None)
            return None
        # Capacity 1: no burst beyond the rate (a restart cannot release a burst either).
        bucket = TokenBucket(per_second, 1.0, str(rate), tokens=1.0, stamp=now)
        if old is not None:
            bucket.waiting = old.waiting
            bucket.tokens = min(old.level(now), bucket.capacity)
        self._buckets[task_name] = bucket
        return bucket

    def get(self, task_name: str) -> TokenBucket | None:
        return self._buckets.get(task_name)

    def items(self) -> list[tuple[str, TokenBucket]]:
        return list(self._buckets.items())

    def next_ready(self, now: float) -> float | None:
        """Seconds until the next waiting item can run, if any is waiting."""
        best: float | None = None
        for bucket in self._buckets.values():
            if bucket.waiting:
                w = bucket.wait_time(now)
                best = w if best is None else min(best, w)
        return best

    def release(self, now: float) -> list[Any]:
        """Waiting items that may run now (one token each)."""
        out: list[Any] = []
        for bucket in self._buckets.values():
            while bucket.waiting and bucket.take(now):
                out.append(bucket.waiting.popleft())
        return out

    def waiting_count(self) -> int:
        return sum(len(b.waiting) for b in self._buckets.values())

    def drain(self) -> list[Any]:
        out: list[Any] = []
        for bucket in self._buckets.values():
            out.extend(bucket.waiting)
            bucket.waiting.clear()
        return out
