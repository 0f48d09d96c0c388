"""Beat: periodic tasks from ``beat_schedule``, safe to run in more than one process.

Owns schedules (``schedule``, ``crontab``), the leader lock and the last-run state in Redis, and
the ``Beat`` loop that sends due tasks through the App. May import ``tq.app`` (through the object
it is given), ``tq.clock``, ``tq.exceptions`` and ``tq.signals``; must not import ``tq.worker``
or the console (the worker embeds beat, not the other way round).
"""

from __future__ import annotations

from tq.beat.lock import LeaderLock
from tq.beat.scheduler import Beat, BeatEntryState, Entry
from tq.beat.schedules import Due, Schedule, crontab, maybe_schedule, resolve_zone, schedule
from tq.beat.store import BeatStore, EntryRecord

__all__ = [
    "Beat",
    "BeatEntryState",
    "BeatStore",
    "Due",
    "Entry",
    "EntryRecord",
    "LeaderLock",
    "Schedule",
    "crontab",
    "maybe_schedule",
    "resolve_zone",
    "schedule",
]
