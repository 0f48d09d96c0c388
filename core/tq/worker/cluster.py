"""The cluster as events show it: a thread feeding Celery-format events into ``ClusterState``,
read as ``WorkerInfo`` / ``RequestInfo`` snapshot values (bounded memory)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from tq.app.event_state import ClusterState, TaskView
from tq.app.events import EventReceiver
from tq.worker.snapshot import RequestInfo, WorkerInfo

logger = logging.getLogger(__name__)


class ClusterWatcher:
    """Watches every worker on the broker (tq's and Celery's) through their events."""

    def __init__(self, app: Any) -> None:
        self.state = ClusterState()
        self._receiver = EventReceiver(app, callback=self.state.event)
        self._thread = threading.Thread(target=self._run, name="tq-cluster", daemon=True)
        self._stopped = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._receiver.capture()
            except Exception:
                logger.warning("Cluster event receiver failed; restarting", exc_info=True)
                self._stopped.wait(1.0)

    def stop(self) -> None:
        self._stopped.set()
        self._receiver.stop()
        self._thread.join(3)

    def workers(self) -> tuple[WorkerInfo, ...]:
        return tuple(
            WorkerInfo(
                hostname=w.hostname,
                online=w.online,
                last_heartbeat=w.last_heartbeat or 0.0,
                active=w.active or 0,
                processed=w.processed or 0,
                loadavg=tuple(w.loadavg or ()),
                sw_ident=w.sw_ident or "",
                sw_ver=w.sw_ver or "",
            )
            for w in self.state.workers()
        )

    def tasks(self, limit: int = 200) -> tuple[RequestInfo, ...]:
        return tuple(task_info(t) for t in self.state.tasks(limit=limit))


def task_info(t: TaskView) -> RequestInfo:
    finished = t.succeeded or t.failed or t.revoked
    return RequestInfo(
        task_id=t.uuid,
        name=t.name or "?",
        state=t.state,
        args_repr=t.args or "",
        kwargs_repr=t.kwargs or "",
        queue=t.routing_key or "",
        received_at=t.received or t.sent or t.timestamp or 0.0,
        started_at=t.started,
        finished_at=finished,
        runtime=t.runtime,
        retries=t.retries or 0,
        result_repr=t.result,
        exception=t.exception,
        traceback=t.traceback,
        worker=t.worker,
    )
