"""``ActionLogScreen``: who did what from a console, and how it went (kept in Redis by the runtime).

The app feeds the log through ``show_action_log`` (it is read in a thread worker).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from textual.app import ComposeResult

from tq_console.screens.base import ViewScreen
from tq_console.widgets.action_table import ActionTable


class ActionLogScreen(ViewScreen):
    """The action log view (read only)."""

    VIEW = "actions"
    TITLE = "Action log"

    def __init__(self, views: Sequence[tuple[str, str, str]], *, read_only: bool = False) -> None:
        super().__init__(views, read_only=read_only)
        self.entries: tuple[Mapping[str, Any], ...] = ()

    def compose_body(self) -> ComposeResult:
        yield ActionTable(id="action-table")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(ActionTable).update(self.entries)
        self.refresh_title()

    def show_action_log(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Show ``entries``, oldest first as the runtime returns them."""
        self.entries = tuple(entries)
        if self.ready:
            self.query_one(ActionTable).update(self.entries)
            self.refresh_title()
