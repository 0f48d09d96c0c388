"""``EventsScreen``: the live event log from the worker's event ring."""

from __future__ import annotations

from textual.app import ComposeResult

from tq.worker.snapshot import Snapshot
from tq_console.screens.base import ViewScreen
from tq_console.widgets.event_log import EventLog


class EventsScreen(ViewScreen):
    """The events view (read only); follows the newest event while the cursor is on the last row."""

    VIEW = "events"
    TITLE = "Events"

    def compose_body(self) -> ComposeResult:
        yield EventLog(id="event-log")

    def render_snapshot(self, snapshot: Snapshot) -> None:
        self.query_one(EventLog).update(snapshot.events)
