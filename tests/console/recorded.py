"""A recorded, deterministic sequence of worker snapshots for console tests and screenshots.

Everything is computed from fixed timestamps and arithmetic (no clock, no randomness), so the
same call always returns equal snapshots. ``recorded_snapshots()`` returns a few snapshots taken
two seconds apart in which tasks progress, events arrive and counters grow.
"""

from __future__ import annotations

import math

from recorded_tasks import (
    FAILED_TASK_ID,
    HOSTNAME,
    STEP,
    T0,
    TRACEBACK,
    recorded_requests,
    task_id,
)

from tq.worker.snapshot import (
    BeatEntryInfo,
    BrokerHealth,
    BucketInfo,
    ChildInfo,
    Counters,
    DeadLetter,
    EventRecord,
    QueueInfo,
    Snapshot,
    TimerEntry,
    UnackedEntry,
    UnackedInfo,
    WorkerInfo,
)

__all__ = [
    "FAILED_TASK_ID",
    "HOSTNAME",
    "STEP",
    "T0",
    "TRACEBACK",
    "VISIBILITY_TIMEOUT",
    "recorded_snapshot",
    "recorded_snapshots",
    "task_id",
]

VISIBILITY_TIMEOUT = 3600.0
MIB = 1024 * 1024


def _queues(step: int) -> tuple[QueueInfo, ...]:
    return (
        QueueInfo(
            "default",
            ((0, 1204 - 37 * step), (3, 96), (6, 12), (9, 0)),
            4,
            412.0 + STEP * step,
            True,
        ),
        QueueInfo(
            "emails", ((0, 38 + step), (3, 0), (6, 0), (9, 5)), 2, 2890.0 + STEP * step, True
        ),
        QueueInfo("reports", ((0, 7), (3, 2), (6, 0), (9, 0)), 1, 3370.0 + STEP * step, True),
        QueueInfo("low", ((0, 5230 + 120 * step), (3, 0), (6, 0), (9, 0)), 0, None, False),
        QueueInfo("critical", ((0, 0), (3, 0), (6, 0), (9, 2)), 0, None, True),
    )


def _unacked(step: int) -> UnackedInfo:
    ages = (
        ("default", 412.0, 1),
        ("default", 95.0, 2),
        ("default", 12.5, 3),
        ("default", 3.1, 4),
        ("emails", 2890.0, 5),
        ("emails", 640.0, 6),
        ("reports", 3370.0, 7),
    )
    entries = tuple(
        UnackedEntry(
            delivery_tag=f"{n:04d}c7a2-{n * 31:04x}",
            task_id=task_id(100 + n),
            task_name={
                "default": "images.resize",
                "emails": "mail.send_welcome",
                "reports": "reports.monthly",
            }[queue],
            queue=queue,
            age=age + STEP * step,
            restore_in=VISIBILITY_TIMEOUT - age - STEP * step,
            held_here=n != 6,
        )
        for queue, age, n in ages
    )
    return UnackedInfo(len(entries), max(e.age for e in entries), VISIBILITY_TIMEOUT, entries)


def _children(step: int, now: float) -> tuple[ChildInfo, ...]:
    return (
        ChildInfo(
            0,
            48211,
            "busy",
            task_id(1),
            "images.resize",
            3.2 + STEP * step,
            T0 - 7260,
            97.5,
            84 * MIB,
            1523,
        ),
        ChildInfo(
            1,
            48212,
            "busy",
            task_id(2),
            "reports.monthly",
            48.7 + STEP * step,
            T0 - 7260,
            45.1,
            212 * MIB,
            87,
        ),
        ChildInfo(2, 48213, "idle", None, None, None, T0 - 7260, 0.0, 61 * MIB, 1611 + step),
        ChildInfo(3, 50977, "idle", None, None, None, T0 - 905, 0.3, 58 * MIB, 212),
    )


def _events(step: int, now: float) -> tuple[EventRecord, ...]:
    kinds = ("task-received", "task-started", "task-succeeded")
    names = ("images.resize", "mail.send_welcome", "images.thumbnail", "reports.daily")
    events = [
        EventRecord(T0 - 7260.0, "worker-online", None, None, "prefork, 4 processes", HOSTNAME)
    ]
    for i in range(24 + step):  # one event every 2 s, the newest 2 s before ``now``
        moment = T0 - 48.0 + i * 2.0 + 0.125
        name = names[i % len(names)]
        kind = kinds[i % 3]
        detail = {
            "task-received": "queue default",
            "task-started": "pid 48211",
            "task-succeeded": "runtime 1.42s",
        }[kind]
        events.append(EventRecord(moment, kind, task_id(200 + i // 3), name, detail, HOSTNAME))
    events.append(
        EventRecord(
            T0 - 38.7,
            "task-failed",
            FAILED_TASK_ID,
            "billing.charge_card",
            "PaymentDeclined: card declined for cus_8812",
            HOSTNAME,
        )
    )
    events.append(
        EventRecord(
            T0 - 11.0,
            "task-retried",
            task_id(13),
            "images.thumbnail",
            "TimeoutError: s3 read timed out (retry 1 in 12s)",
            HOSTNAME,
        )
    )
    events.append(
        EventRecord(
            T0 - 9.0, "task-revoked", task_id(14), "reports.daily", "revoked by console", HOSTNAME
        )
    )
    events.append(
        EventRecord(now - 1.0, "worker-heartbeat", None, None, "active 2, processed 3433", HOSTNAME)
    )
    return tuple(events)


def _counters(step: int) -> Counters:
    history = tuple(
        round(30 + 14 * math.sin(i / 5.0) + 6 * math.sin(i / 1.7) + (i % 7), 1)
        for i in range(step, step + 60)
    )
    failures = tuple(
        float((i * 7) % 11 == 0) + (2.0 if i in (17, 18, 41) else 0.0)
        for i in range(step, step + 60)
    )
    return Counters(
        received=48213 + 21 * step,
        succeeded=47102 + 20 * step,
        failed=311,
        retried=402 + step // 2,
        revoked=17,
        rejected=3,
        dead_lettered=4,
        rate=history[-1],
        history=history,
        failure_history=failures,
    )


def _static_parts(now: float) -> dict[str, object]:
    timers = (
        TimerEntry(task_id(7), "billing.charge_card", T0 + 12.0, "retry"),
        TimerEntry(task_id(9), "mail.send_digest", T0 + 45.0, "countdown"),
        TimerEntry(task_id(6), "mail.send_reminder", T0 + 180.0, "eta"),
        TimerEntry(task_id(8), "reports.weekly", T0 + 7200.0, "eta"),
        TimerEntry(task_id(10), "billing.renew_subscriptions", T0 + 86400.0, "eta"),
    )
    buckets = (
        BucketInfo("mail.send_welcome", "10/s", 10.0, 3.5, 4),
        BucketInfo("images.resize", "100/m", 100.0, 62.0, 0),
        BucketInfo("billing.charge_card", "1000/h", 1000.0, 0.4, 12),
    )
    dead = (
        DeadLetter(
            "dl-0004",
            "undecodable body (DecodeError)",
            "default",
            T0 - 65.0,
            None,
            None,
            312,
            "b'\\x80\\x04\\x95\\x1f\\x00\\x00...'",
        ),
        DeadLetter(
            "dl-0003",
            "unknown task reports.legacy_export",
            "reports",
            T0 - 610.0,
            task_id(21),
            "reports.legacy_export",
            1843,
            '[["2025-11"], {}, {"callbacks": null}]',
        ),
        DeadLetter(
            "dl-0002",
            "max retries exceeded",
            "default",
            T0 - 3700.0,
            task_id(22),
            "billing.charge_card",
            1520,
            '[["cus_7710", 1299], {}, {}]',
        ),
        DeadLetter(
            "dl-0001",
            "rejected (requeue=False)",
            "emails",
            T0 - 86000.0,
            task_id(23),
            "mail.send_welcome",
            980,
            "[[8790], {}, {}]",
        ),
    )
    workers = (
        WorkerInfo(HOSTNAME, True, now - 1.0, 2, 3433, (1.92, 1.61, 1.40), "tq", "0.1.0", 4),
        WorkerInfo("tq@worker-2", True, now - 3.0, 4, 12877, (3.51, 3.20, 2.98), "tq", "0.1.0", 8),
        WorkerInfo(
            "celery@legacy-1",
            False,
            T0 - 420.0,
            0,
            90211,
            (0.05, 0.11, 0.30),
            "py-celery",
            "5.4.0",
            4,
        ),
    )
    beat = (
        BeatEntryInfo(
            "heartbeat-ping", "ops.ping", "every 30s", T0 + 18.0, T0 - 12.0, 8640, "'pong'"
        ),
        BeatEntryInfo(
            "cleanup-every-5m",
            "ops.cleanup_tmp",
            "every 5 min",
            T0 + 140.0,
            T0 - 160.0,
            1442,
            "42 files",
        ),
        BeatEntryInfo(
            "send-digest", "mail.send_digest", "crontab */15 * * * *", T0 + 900.0, T0, 96, None
        ),
        BeatEntryInfo(
            "nightly-report",
            "reports.daily",
            "crontab 0 3 * * *",
            T0 + 63000.0,
            T0 - 23400.0,
            31,
            "ERROR: TimeoutError",
        ),
    )
    return {
        "timers": timers,
        "buckets": buckets,
        "dead_letters": dead,
        "workers": workers,
        "beat": beat,
    }


def recorded_snapshot(step: int) -> Snapshot:
    """The snapshot taken ``step`` times 2 seconds after :data:`T0`."""
    now = T0 + STEP * step
    requests = recorded_requests(step, now)
    parts = _static_parts(now)
    return Snapshot(
        taken_at=now,
        hostname=HOSTNAME,
        pool="prefork",
        concurrency=4,
        prefetch_limit=16,
        state="running",
        queues=_queues(step),
        unacked=_unacked(step),
        timers=parts["timers"],  # type: ignore[arg-type]
        buckets=parts["buckets"],  # type: ignore[arg-type]
        children=_children(step, now),
        active=requests["active"],
        reserved=requests["reserved"],
        scheduled=requests["scheduled"],
        recent=requests["recent"],
        revoked=(task_id(14),),
        dead_letters=parts["dead_letters"],  # type: ignore[arg-type]
        dead_letter_count=4,
        counters=_counters(step),
        events=_events(step, now),
        workers=parts["workers"],  # type: ignore[arg-type]
        beat=parts["beat"],  # type: ignore[arg-type]
        broker=BrokerHealth(True, 0.42 + 0.01 * step, None, "redis://localhost:6379/0"),
        paused_queues=("low",),
        recycled_children=7,
    )


def recorded_snapshots(count: int = 5) -> list[Snapshot]:
    """``count`` snapshots, two seconds apart, oldest first."""
    return [recorded_snapshot(step) for step in range(count)]
