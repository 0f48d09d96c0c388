"""``BeatScreen``: the beat schedule; send an entry now (``t``, confirmed)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from tq.worker.snapshot import Snapshot
from tq_console import format as fmt
from tq_console.messages import Call, CommandRequest
from tq_console.screens.base import ViewScreen
from tq_console.widgets.beat_table import BeatTable


class BeatScreen(ViewScreen):
    """The beat view."""

    VIEW = "beat"
    TITLE = "Beat schedule"
    MUTATING = frozenset({"trigger"})

    BINDINGS: ClassVar[list[BindingType]] = [Binding("t", "trigger", "Trigger")]

    def compose_body(self) -> ComposeResult:
        yield BeatTable(id="beat-table")

    def render_snapshot(self, snapshot: Snapshot) -> None:
        self.query_one(BeatTable).update(snapshot.beat, snapshot.taken_at)

    def action_trigger(self) -> None:
        if self.snapshot is None:
            return
        entries = {entry.name: entry for entry in self.snapshot.beat}
        keys = [key for key in self.selected() if key in entries]
        if not keys:
            return
        entry = entries[keys[0]]
        next_run = fmt.until(entry.next_run, self.snapshot.taken_at)
        self.request(
            CommandRequest(
                title="Trigger beat entry",
                summary=(
                    f"Send '{entry.name}' ({entry.task}) once now, outside its schedule "
                    f"({entry.schedule}). Its next scheduled run ({next_run}) is unchanged."
                ),
                calls=(Call("trigger_beat", (entry.name,)),),
            )
        )
