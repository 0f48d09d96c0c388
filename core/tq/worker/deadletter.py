"""``tq.dead``: messages that cannot run, kept with their reason, original bytes and time.

Entries are ``<meta JSON>\\n<original bytes>`` (README documents the format). Requeueing puts
the original bytes back on the queue they came from, unchanged.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from tq.transport.redis import RedisTransport
from tq.worker.snapshot import CommandResult, DeadLetter

logger = logging.getLogger(__name__)

#: Dead letters shown in a snapshot.
SNAPSHOT_MAX = 100


def record(
    transport: RedisTransport,
    reason: str,
    queue: str,
    raw: bytes,
    task_id: str | None = None,
    task_name: str | None = None,
) -> str:
    """Dead-letter ``raw`` and log one line saying why."""
    entry_id = transport.dead_letter(reason, queue, raw, task_id=task_id, task_name=task_name)
    logger.error(
        "Dead-lettered message %s from queue %r (task %s[%s]): %s",
        entry_id,
        queue,
        task_name or "?",
        task_id or "?",
        reason,
    )
    return entry_id


def to_info(meta: dict[str, Any], raw: bytes) -> DeadLetter:
    task_id = meta.get("task_id")
    task_name = meta.get("task_name")
    if task_id is None or task_name is None:
        try:
            headers = json.loads(raw).get("headers") or {}
            task_id = task_id or headers.get("id")
            task_name = task_name or headers.get("task")
        except (ValueError, AttributeError):
            pass
    preview = raw[:160].decode("utf-8", "replace")
    return DeadLetter(
        id=str(meta.get("id", "?")),
        reason=str(meta.get("reason", "")),
        queue=str(meta.get("queue", "")),
        time=float(meta.get("time") or 0.0),
        task_id=task_id if isinstance(task_id, str) else None,
        task_name=task_name if isinstance(task_name, str) else None,
        raw_size=len(raw),
        raw_preview=preview,
    )


def listing(transport: RedisTransport, limit: int = SNAPSHOT_MAX) -> list[DeadLetter]:
    return [to_info(meta, raw) for meta, raw in transport.dead_letters(0, limit - 1)]


def requeue(transport: RedisTransport, entry_id: str, default_queue: str) -> CommandResult:
    """Put a dead letter's original bytes back on its queue."""
    taken = transport.dead_take(entry_id)
    if taken is None:
        return CommandResult(False, f"dead letter {entry_id} is gone (already requeued?)")
    meta, raw = taken
    queue = str(meta.get("queue") or default_queue)
    priority = 0
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        priority = int(json.loads(raw)["properties"].get("priority") or 0)
    transport.publish(raw.decode("utf-8", "replace"), queue, priority)
    return CommandResult(True, f"requeued dead letter {entry_id} onto {queue!r}", 1)


def delete(transport: RedisTransport, entry_id: str) -> CommandResult:
    taken = transport.dead_take(entry_id)
    if taken is None:
        return CommandResult(False, f"dead letter {entry_id} is gone")
    return CommandResult(True, f"deleted dead letter {entry_id}", 1)
