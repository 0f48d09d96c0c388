"""The tasks of the recorded snapshots: fixed ids, times and the failure with its traceback.

Part of ``recorded.py``'s deterministic data (split out to keep each module short).
"""

from __future__ import annotations

from tq.worker.snapshot import RequestInfo

#: 2026-01-01 09:30:00 UTC: the time of the first recorded snapshot.
T0 = 1_767_259_800.0
#: Seconds between recorded snapshots.
STEP = 2.0
HOSTNAME = "tq@worker-1"

FAILED_TASK_ID = "9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f"
TRACEBACK = """Traceback (most recent call last):
  File "/app/tq/worker/trace.py", line 118, in run
    result = task(*args, **kwargs)
  File "/app/billing/tasks.py", line 42, in charge_card
    receipt = gateway.charge(customer_id, amount_cents)
  File "/app/billing/gateway.py", line 77, in charge
    raise PaymentDeclined(f"card declined for {customer_id}: insufficient funds")
billing.gateway.PaymentDeclined: card declined for cus_8812: insufficient funds
"""


def task_id(n: int) -> str:
    """A fixed, UUID-shaped task id."""
    return f"{n:08x}-1c2d-4e3f-8a9b-{n * 7919:012x}"


def recorded_requests(step: int, now: float) -> dict[str, tuple[RequestInfo, ...]]:
    """Active, reserved, scheduled and recent tasks ``step`` snapshots in, at ``now``."""
    active = (
        RequestInfo(
            task_id(1),
            "images.resize",
            "STARTED",
            "('s3://media/cat.png',)",
            "{'width': 640}",
            "default",
            now - 5.0,
            started_at=now - 3.2 - STEP * step,
            worker_pid=48211,
            worker=HOSTNAME,
        ),
        RequestInfo(
            task_id(2),
            "reports.monthly",
            "STARTED",
            "(2025, 12)",
            "{}",
            "reports",
            now - 50.0,
            started_at=now - 48.7 - STEP * step,
            worker_pid=48212,
            worker=HOSTNAME,
        ),
    )
    reserved = (
        RequestInfo(
            task_id(3),
            "images.resize",
            "RECEIVED",
            "('s3://media/dog.png',)",
            "{'width': 320}",
            "default",
            now - 1.5,
        ),
        RequestInfo(
            task_id(4), "mail.send_welcome", "RECEIVED", "(8812,)", "{}", "emails", now - 1.1
        ),
        RequestInfo(
            task_id(5),
            "images.thumbnail",
            "RECEIVED",
            "('s3://media/owl.png',)",
            "{}",
            "default",
            now - 0.4,
        ),
    )
    scheduled = (
        RequestInfo(
            task_id(6),
            "mail.send_reminder",
            "RECEIVED",
            "(311,)",
            "{'template': 'trial-ends'}",
            "emails",
            now - 60.0,
            eta=T0 + 180.0,
        ),
        RequestInfo(
            task_id(7),
            "billing.charge_card",
            "RETRY",
            "('cus_8812', 4999)",
            "{}",
            "default",
            now - 30.0,
            eta=T0 + 12.0,
            retries=2,
        ),
        RequestInfo(
            task_id(8),
            "reports.weekly",
            "RECEIVED",
            "()",
            "{}",
            "reports",
            now - 10.0,
            eta=T0 + 7200.0,
        ),
    )
    recent = (
        RequestInfo(
            FAILED_TASK_ID,
            "billing.charge_card",
            "FAILURE",
            "('cus_8812', 4999)",
            "{'currency': 'eur'}",
            "default",
            T0 - 40.0,
            started_at=T0 - 39.5,
            finished_at=T0 - 38.7,
            runtime=0.81,
            worker_pid=48213,
            exception="PaymentDeclined('card declined for cus_8812: insufficient funds')",
            traceback=TRACEBACK,
            worker=HOSTNAME,
            retries=3,
        ),
        RequestInfo(
            task_id(11),
            "images.resize",
            "SUCCESS",
            "('s3://media/a.png',)",
            "{'width': 640}",
            "default",
            T0 - 20.0,
            started_at=T0 - 19.0,
            finished_at=T0 - 17.6,
            runtime=1.42,
            worker_pid=48211,
            result_repr="'s3://media/a_640.png'",
            worker=HOSTNAME,
        ),
        RequestInfo(
            task_id(12),
            "mail.send_welcome",
            "SUCCESS",
            "(8807,)",
            "{}",
            "emails",
            T0 - 15.0,
            started_at=T0 - 14.8,
            finished_at=T0 - 14.5,
            runtime=0.29,
            worker_pid=48213,
            result_repr="True",
            worker=HOSTNAME,
        ),
        RequestInfo(
            task_id(13),
            "images.thumbnail",
            "RETRY",
            "('s3://media/b.png',)",
            "{}",
            "default",
            T0 - 12.0,
            started_at=T0 - 11.9,
            finished_at=T0 - 11.0,
            runtime=0.9,
            worker_pid=48211,
            retries=1,
            exception="TimeoutError('s3 read timed out')",
            worker=HOSTNAME,
        ),
        RequestInfo(
            task_id(14),
            "reports.daily",
            "REVOKED",
            "(2025, 12, 31)",
            "{}",
            "reports",
            T0 - 9.0,
            worker=HOSTNAME,
        ),
        RequestInfo(
            task_id(15),
            "images.resize",
            "SUCCESS",
            "('s3://media/c.png',)",
            "{'width': 1280}",
            "default",
            T0 - 6.0,
            started_at=T0 - 5.8,
            finished_at=T0 - 2.1,
            runtime=3.71,
            worker_pid=48212,
            result_repr="'s3://media/c_1280.png'",
            worker=HOSTNAME,
        ),
    )
    if step >= 2:
        done = RequestInfo(
            task_id(16),
            "mail.send_welcome",
            "SUCCESS",
            "(8813,)",
            "{}",
            "emails",
            now - 3.0,
            started_at=now - 2.5,
            finished_at=now - 2.2,
            runtime=0.31,
            worker_pid=48213,
            result_repr="True",
            worker=HOSTNAME,
        )
        return {
            "active": active,
            "reserved": reserved,
            "scheduled": scheduled,
            "recent": (done, *recent),
        }
    return {"active": active, "reserved": reserved, "scheduled": scheduled, "recent": recent}
