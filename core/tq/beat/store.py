"""Beat's state in Redis: the keys it uses, and per-entry last-run records with atomic claims.

Owns every Redis key beat spells (the block below; ``tq.beat.lock`` is used by ``lock.py``) and
the record of each ``beat_schedule`` entry. There is no local shelve file: any beat process on
any host reads the same state, so a standby that takes over carries on where the leader stopped.
Must not import ``tq.worker``, ``tq.transport`` internals or the console; it is handed a redis-py
client (``decode_responses=False``) by the app.

Keys, each prefixed with the broker's ``global_keyprefix`` transport option as kombu does:

=========================  ======  ==========================================================
``tq.beat.lock``           string  the leader lock: a random token, with a TTL (``lock.py``)
``tq.beat.entry.<name>``   hash    one per entry: ``last_due_ms`` (the due time last claimed,
                                   integer ms since the epoch; before the first run, the
                                   anchor the schedule counts from), ``last_run_at`` (wall
                                   time the last run was claimed, float seconds),
                                   ``total_run_count``, ``last_result`` (the id of the task
                                   last sent, or ``error: ...``)
=========================  ======  ==========================================================

Entries removed from ``beat_schedule`` keep their hash; delete ``tq.beat.entry.<name>`` to forget
one, and beat starts that entry afresh. An entry whose schedule changed keeps counting from its
stored ``last_due_ms`` (so a shorter period may be due, once, right away).

No double run. Sending is guarded by :meth:`BeatStore.claim`: one Lua script compares the stored
``last_due_ms`` with the due time about to fire and only moves it forward. A due time can be
claimed once, by one process, even when two beats both believe they lead; beat sends only after
its claim succeeded. A process that dies between its claim and its publish loses that one run
(at most once, like Celery, which advances ``last_run_at`` before it sends).

Catch-up policy. After downtime or a failover, beat fires the *latest* missed due time once and
moves on: a schedule that missed N due times runs once, not N times (the schedules' ``latest_due``
picks which one). A due time that passes while the leader is dead is not lost: the standby that
takes over (within the lock TTL plus one poll) sends it, late, once. Due times are stored in
whole milliseconds, so two processes that compute the same due time in floating point always
claim the same value.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from tq.exceptions import ConnectionLost, TransportError

logger = logging.getLogger(__name__)

# --- every key beat spells -------------------------------------------------------------------
LOCK_KEY = "tq.beat.lock"
ENTRY_KEY_PREFIX = "tq.beat.entry."


def lock_key(prefix: str = "") -> str:
    """The leader lock's key under the broker's ``global_keyprefix``."""
    return f"{prefix}{LOCK_KEY}"


def entry_key(name: str, prefix: str = "") -> str:
    """The hash holding one entry's record under the broker's ``global_keyprefix``."""
    return f"{prefix}{ENTRY_KEY_PREFIX}{name}"


# ---------------------------------------------------------------------------------------------

# Advance last_due_ms only if the new due time is later; count the run. Returns 1 if claimed.
_CLAIM_LUA = """
local last = tonumber(redis.call('HGET', KEYS[1], 'last_due_ms'))
local due = tonumber(ARGV[1])
if last ~= nil and last >= due then
    return 0
end
redis.call('HSET', KEYS[1], 'last_due_ms', ARGV[1], 'last_run_at', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'total_run_count', 1)
return 1
"""


@dataclass(frozen=True, slots=True)
class EntryRecord:
    """What Redis holds about one entry."""

    last_due: float  # seconds; the anchor until the first run
    last_run_at: float | None
    total_run_count: int
    last_result: str | None


@contextlib.contextmanager
def translated_errors(what: str) -> Iterator[None]:
    """Turn redis-py errors into tq's ``TransportError`` / ``ConnectionLost``, chained."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise ConnectionLost(f"beat could not {what}: {exc}") from exc
    except redis.RedisError as exc:
        raise TransportError(f"beat could not {what}: {exc}") from exc


def to_ms(t: float) -> int:
    """A time in seconds as the whole milliseconds beat stores and compares."""
    return round(t * 1000)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _record(raw: Mapping[Any, Any]) -> EntryRecord | None:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    last_due_ms = fields.get("last_due_ms")
    if last_due_ms is None:
        return None
    last_run_at = fields.get("last_run_at")
    return EntryRecord(
        last_due=int(last_due_ms) / 1000,
        last_run_at=float(last_run_at) if last_run_at is not None else None,
        total_run_count=int(fields.get("total_run_count") or 0),
        last_result=fields.get("last_result"),
    )


class BeatStore:
    """Per-entry records in Redis.

    Args:
        client: a redis-py client for the broker.
        prefix: the broker's ``global_keyprefix``.
    """

    def __init__(self, client: redis.Redis, prefix: str = "") -> None:
        self._client = client
        self._prefix = prefix
        self._claim = client.register_script(_CLAIM_LUA)

    def key(self, name: str) -> str:
        return entry_key(name, self._prefix)

    def read(self, names: Sequence[str]) -> dict[str, EntryRecord]:
        """The records of ``names`` that exist; creates nothing."""
        with translated_errors("read entry state"):
            pipe = self._client.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(self.key(name))
            replies = pipe.execute()
        records = {name: _record(raw) for name, raw in zip(names, replies, strict=True)}
        return {name: record for name, record in records.items() if record is not None}

    def ensure(self, anchors: Mapping[str, float]) -> dict[str, EntryRecord]:
        """The record of every entry, first storing ``anchors[name]`` for entries without one.

        The anchor is written with HSETNX, so when two processes meet a new entry at once the
        first anchor wins and both count from it.
        """
        names = list(anchors)
        with translated_errors("initialise entry state"):
            pipe = self._client.pipeline(transaction=False)
            for name, anchor in anchors.items():
                pipe.hsetnx(self.key(name), "last_due_ms", to_ms(anchor))
                pipe.hgetall(self.key(name))
            replies = pipe.execute()
        records: dict[str, EntryRecord] = {}
        for name, raw in zip(names, replies[1::2], strict=True):
            record = _record(raw)
            if record is None:  # deleted between the two commands; count from the anchor
                record = EntryRecord(to_ms(anchors[name]) / 1000, None, 0, None)
            records[name] = record
        return records

    def claim(self, name: str, due: float, now: float) -> bool:
        """Record that ``name`` runs for due time ``due``; ``False`` if it (or later) already was.

        Atomic: of any number of processes claiming the same due time, exactly one gets ``True``.
        """
        with translated_errors("claim a due time"):
            claimed = self._claim(keys=[self.key(name)], args=[to_ms(due), repr(now)])
        return bool(claimed)

    def record_result(self, name: str, result: str | None) -> None:
        """Remember what the last send of ``name`` produced (a task id or an error text)."""
        with translated_errors("record a result"):
            if result is None:
                self._client.hdel(self.key(name), "last_result")
            else:
                self._client.hset(self.key(name), "last_result", result)

    def record_manual_run(self, name: str, now: float, result: str | None) -> None:
        """Count a run sent on request (``Beat.trigger``) without touching the due times."""
        with translated_errors("record a manual run"):
            pipe = self._client.pipeline(transaction=True)
            pipe.hset(self.key(name), "last_run_at", repr(now))
            pipe.hincrby(self.key(name), "total_run_count", 1)
            if result is not None:
                pipe.hset(self.key(name), "last_result", result)
            pipe.execute()
