"""Commands that need only the broker, shared by the embedded Runtime and the Monitor:
purge, queue length, dead-letter requeue/delete, and the action log (``tq.actions``)."""

from __future__ import annotations

import json
import time
from typing import Any

from tq.worker import deadletter
from tq.worker.snapshot import CommandResult

#: Entries kept in the action log (``tq.actions``).
ACTION_LOG_MAX = 1000


class BrokerCommands:
    """Mixin: needs ``self.app`` and ``self.hostname``."""

    app: Any

    def purge(self, queue: str) -> CommandResult:
        n = self.app.transport.purge(queue)
        return CommandResult(True, f"purged {n} message(s) from {queue!r}", n)

    def queue_length(self, queue: str) -> int:
        return int(self.app.transport.queue_length(queue))

    def requeue_dead(self, entry_id: str) -> CommandResult:
        return deadletter.requeue(self.app.transport, entry_id, self.app.conf.task_default_queue)

    def delete_dead(self, entry_id: str) -> CommandResult:
        return deadletter.delete(self.app.transport, entry_id)

    def record_action(self, who: str, what: str, outcome: str) -> None:
        """Append to the action log kept in Redis (``tq.actions``, newest first, trimmed)."""
        entry = json.dumps(
            {
                "time": time.time(),
                "who": who,
                "what": what,
                "outcome": outcome,
                "worker": getattr(self, "hostname", ""),
            }
        )
        keys = self.app.transport.keys
        pipe = self.app.transport.client.pipeline(transaction=False)
        pipe.lpush(keys.actions, entry)
        pipe.ltrim(keys.actions, 0, ACTION_LOG_MAX - 1)
        pipe.execute()

    def action_log(self, limit: int = 200) -> list[dict[str, Any]]:
        rows = self.app.transport.client.lrange(self.app.transport.keys.actions, 0, limit - 1)
        out = []
        for row in rows:
            try:
                out.append(json.loads(row))
            except ValueError:
                continue
        return out
