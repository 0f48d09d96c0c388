"""Time as a seam: everything time-based takes a ``Clock`` so tests can drive it.

``TQ_CLOCK_OFFSET=<seconds>`` (a test hook, RELIABILITY.md T17) makes a worker behave as if
its host clock were that far off: ``install_env_offset`` shifts ``time.time`` for the whole
process, as libfaketime would. Delivery scores and the visibility sweep read the broker's
clock (``TIME``), so they are not affected; ETAs this process compares or computes with
``time.time`` are.
"""

from __future__ import annotations

import os
import time
from typing import Protocol

#: The environment variable of the clock-offset test hook.
CLOCK_OFFSET_ENV = "TQ_CLOCK_OFFSET"
_real_time = time.time


class Clock(Protocol):
    """Wall time, monotonic time and sleeping."""

    def time(self) -> float:
        """Seconds since the Unix epoch (wall clock)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class FakeClock:
    """A clock that moves only when told to (for tests and deterministic rendering)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._mono = 1000.0

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds


def env_offset() -> float:
    """The offset ``TQ_CLOCK_OFFSET`` asks for in seconds (0 when unset or unreadable)."""
    raw = os.environ.get(CLOCK_OFFSET_ENV, "").strip()
    try:
        return float(raw) if raw else 0.0
    except ValueError:
        return 0.0


def install_env_offset() -> float:
    """Shift ``time.time`` by ``TQ_CLOCK_OFFSET`` seconds for this process (and the children
    it forks afterwards); returns the offset (0: nothing changed). A test hook only."""
    offset = env_offset()
    if offset:
        time.time = lambda: _real_time() + offset
    return offset
