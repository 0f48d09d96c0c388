"""``WorkersScreen``: the cluster's worker nodes as their heartbeats describe them."""

from __future__ import annotations

from textual.app import ComposeResult

from tq.worker.snapshot import Snapshot
from tq_console.screens.base import ViewScreen
from tq_console.widgets.worker_table import WorkerTable


class WorkersScreen(ViewScreen):
    """The workers view (read only)."""

    VIEW = "workers"
    TITLE = "Workers"

    def compose_body(self) -> ComposeResult:
        yield WorkerTable(id="worker-table")

    def render_snapshot(self, snapshot: Snapshot) -> None:
        self.query_one(WorkerTable).update(snapshot.workers, snapshot.taken_at)

    def body_title(self) -> str:
        if self.snapshot is None:
            return self.TITLE
        online = sum(worker.online for worker in self.snapshot.workers)
        return f"{self.TITLE} [{online}/{len(self.snapshot.workers)} online]"
