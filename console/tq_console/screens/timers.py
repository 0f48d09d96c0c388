"""``TimersScreen``: ETA, countdown and retry entries waiting in memory until due."""

from __future__ import annotations

from textual.app import ComposeResult

from tq.worker.snapshot import Snapshot
from tq_console.screens.base import ViewScreen
from tq_console.widgets.timer_table import TimerTable


class TimersScreen(ViewScreen):
    """The timers view (read only)."""

    VIEW = "timers"
    TITLE = "Timers"

    def compose_body(self) -> ComposeResult:
        yield TimerTable(id="timer-table")

    def render_snapshot(self, snapshot: Snapshot) -> None:
        self.query_one(TimerTable).update(snapshot.timers, snapshot.taken_at)
