"""``UnackedScreen``: deliveries in the unacked hash and when the visibility sweep restores them."""

from __future__ import annotations

from textual.app import ComposeResult

from tq.worker.snapshot import Snapshot
from tq_console import format as fmt
from tq_console.screens.base import ViewScreen
from tq_console.widgets.unacked_table import UnackedTable


class UnackedScreen(ViewScreen):
    """The unacked view (read only)."""

    VIEW = "unacked"
    TITLE = "Unacked"

    def compose_body(self) -> ComposeResult:
        yield UnackedTable(id="unacked-table")

    def render_snapshot(self, snapshot: Snapshot) -> None:
        self.query_one(UnackedTable).update(snapshot.unacked)

    def body_title(self) -> str:
        if self.snapshot is None:
            return self.TITLE
        unacked = self.snapshot.unacked
        return (
            f"{self.TITLE} [{fmt.count(unacked.count)}]  oldest {fmt.duration(unacked.oldest_age)}"
            f"  visibility timeout {fmt.duration(unacked.visibility_timeout)}"
        )
