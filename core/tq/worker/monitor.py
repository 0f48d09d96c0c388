"""Monitor: the console's data source when no local worker runs (``tq-console --monitor``).

It shows the cluster (tq's and Celery's workers) from events and Redis, and sends commands as
remote-control broadcasts, so the console's views and keys work the same as with an embedded
Runtime: the same ``snapshot()`` and command API.
"""

from __future__ import annotations

import time
from typing import Any

from tq.transport.connection import mask_url
from tq.worker import deadletter
from tq.worker.cluster import ClusterWatcher
from tq.worker.commands import BrokerCommands
from tq.worker.snapshot import (
    BrokerHealth,
    Counters,
    QueueInfo,
    Snapshot,
    UnackedInfo,
)


class Monitor(BrokerCommands):
    """A read-mostly view of a cluster with remote-control commands.

    Args:
        app: the app whose broker to watch.
        queues: queues to show (default: the app's default queue).
    """

    def __init__(self, app: Any, queues: list[str] | None = None) -> None:
        self.app = app
        self.queues = list(queues or [app.conf.task_default_queue])
        self.watcher = ClusterWatcher(app)
        self.state = "created"
        self.hostname = "monitor"

    def start(self) -> None:
        self.watcher.start()
        self.state = "running"

    def stop(self, timeout: float = 5.0, cold: bool = False) -> None:
        self.watcher.stop()
        self.state = "stopped"

    def snapshot(self) -> Snapshot:
        now = time.time()
        transport = self.app.transport
        broker = BrokerHealth(True, None, None, mask_url(self.app.conf.broker_url))
        queues: list[QueueInfo] = []
        unacked = UnackedInfo(0, None, transport.visibility_timeout)
        dead: tuple[Any, ...] = ()
        dead_count = 0
        try:
            latency = transport.ping() * 1000
            for q in self.queues:
                queues.append(QueueInfo(q, tuple(transport.queue_lengths(q)), 0, None, False))
            oldest = transport.unacked_oldest(1)
            server_now = transport.server_time()
            unacked = UnackedInfo(
                transport.unacked_count(),
                server_now - oldest[0][1] if oldest else None,
                transport.visibility_timeout,
            )
            dead = tuple(deadletter.listing(transport))
            dead_count = transport.dead_count()
            broker = BrokerHealth(True, latency, None, broker.url)
        except Exception as exc:
            broker = BrokerHealth(False, None, str(exc), broker.url)
        workers = self.watcher.workers()
        tasks = self.watcher.tasks()
        counts = self.watcher.state.counts()
        return Snapshot(
            taken_at=now,
            hostname=self.hostname,
            pool="monitor",
            concurrency=0,
            prefetch_limit=0,
            state=self.state,
            queues=tuple(queues),
            unacked=unacked,
            active=tuple(t for t in tasks if t.state == "STARTED"),
            reserved=tuple(t for t in tasks if t.state == "RECEIVED"),
            recent=tasks,
            dead_letters=dead,
            dead_letter_count=dead_count,
            counters=Counters(
                received=self.watcher.state.task_count,
                succeeded=counts.get("SUCCESS", 0),
                failed=counts.get("FAILURE", 0),
                retried=counts.get("RETRY", 0),
                revoked=counts.get("REVOKED", 0),
            ),
            workers=workers,
            broker=broker,
        )

    # -- commands, as broadcasts ----------------------------------------------------------
    def revoke(self, task_id: str, terminate: bool = False, signal: str = "SIGTERM") -> Any:
        from tq.worker.snapshot import CommandResult

        self.app.control.revoke(task_id, terminate=terminate, signal=signal)
        return CommandResult(True, f"revoke of {task_id} broadcast to every worker", 1)

    def retry(self, task_id: str) -> Any:
        from tq.worker.snapshot import CommandResult

        return CommandResult(
            False, "retry needs the task's original message: run the console with a local worker"
        )

    def _broadcast(self, command: str, text: str, **arguments: Any) -> Any:
        from tq.worker.snapshot import CommandResult

        replies = self.app.control.broadcast(command, arguments=arguments, reply=True, timeout=1.0)
        return CommandResult(
            bool(replies), f"{text}: {len(replies)} worker(s) answered", len(replies), replies
        )

    def grow(self, n: int = 1) -> Any:
        return self._broadcast("pool_grow", f"pool_grow {n}", n=n)

    def shrink(self, n: int = 1) -> Any:
        return self._broadcast("pool_shrink", f"pool_shrink {n}", n=n)

    def pause_queue(self, queue: str) -> Any:
        return self._broadcast("cancel_consumer", f"cancel_consumer {queue}", queue=queue)

    def resume_queue(self, queue: str) -> Any:
        return self._broadcast("add_consumer", f"add_consumer {queue}", queue=queue)

    def set_rate_limit(self, task_name: str, rate: str) -> Any:
        return self._broadcast(
            "rate_limit", f"rate_limit {task_name} {rate}", task_name=task_name, rate_limit=rate
        )

    def trigger_beat(self, entry_name: str) -> Any:
        from tq.worker.snapshot import CommandResult

        return CommandResult(False, "beat runs in a worker; trigger it from that worker's console")
