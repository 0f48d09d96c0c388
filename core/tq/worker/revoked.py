"""The revoked set: bounded (``worker_revoked_max``) with expiry (``worker_revoked_expires``),
like Celery's LimitedSet. Oldest entries leave first when full."""

from __future__ import annotations

from collections import OrderedDict


class RevokedSet:
    def __init__(self, maxlen: int = 50000, expires: float = 10800.0) -> None:
        self.maxlen = maxlen
        self.expires = expires
        self._items: OrderedDict[str, float] = OrderedDict()

    def add(self, task_id: str, now: float) -> None:
        self._items[task_id] = now
        self._items.move_to_end(task_id)
        self.purge(now)

    def purge(self, now: float) -> None:
        while self._items:
            first_id, stamp = next(iter(self._items.items()))
            if len(self._items) > self.maxlen or now - stamp > self.expires:
                self._items.pop(first_id)
            else:
                break

    def discard(self, task_id: str) -> None:
        self._items.pop(task_id, None)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._items

    def __len__(self) -> int:
        return len(self._items)

    def ids(self, limit: int | None = None) -> list[str]:
        items = list(self._items)
        return items[-limit:] if limit else items
