"""The ETA / countdown heap, on an injected clock. Entries are held until due."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Timer(Generic[T]):
    """A min-heap of ``(due, item)``; ``pop_due(now)`` yields what is due, in due order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, item: T) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), item))

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[T]:
        out: list[T] = []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap)[2])
        return out

    def remove(self, predicate: Callable[[T], bool]) -> list[T]:
        """Take out every item for which ``predicate(item)`` is true."""
        gone = [e[2] for e in self._heap if predicate(e[2])]
        if gone:
            self._heap = [e for e in self._heap if not predicate(e[2])]
            heapq.heapify(self._heap)
        return gone

    def drain(self) -> list[T]:
        items = [e[2] for e in sorted(self._heap)]
        self._heap.clear()
        return items

    def __iter__(self) -> Iterator[tuple[float, T]]:
        return iter(
            [(due, item) for due, _, item in sorted(self._heap, key=lambda e: (e[0], e[1]))]
        )
