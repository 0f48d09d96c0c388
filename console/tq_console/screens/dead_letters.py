"""``DeadLettersScreen``: entries of ``tq.dead``; requeue (``r``) or delete (``d``, typed).

Both apply to the marked rows, or to the cursor row when none are marked.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from tq.worker.snapshot import DeadLetter, Snapshot
from tq_console import format as fmt
from tq_console.messages import Call, CommandRequest
from tq_console.screens.base import ViewScreen, bullet_list
from tq_console.widgets.dead_letter_table import DeadLetterTable


class DeadLettersScreen(ViewScreen):
    """The dead letters view."""

    VIEW = "dead"
    TITLE = "Dead letters"
    MUTATING = frozenset({"requeue", "delete"})

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "requeue", "Requeue"),
        Binding("d", "delete", "Delete"),
    ]

    def compose_body(self) -> ComposeResult:
        yield DeadLetterTable(id="dead-letter-table")

    def render_snapshot(self, snapshot: Snapshot) -> None:
        self.query_one(DeadLetterTable).update(snapshot.dead_letters, snapshot.taken_at)

    def body_title(self) -> str:
        if self.snapshot is None:
            return self.TITLE
        shown, total = len(self.snapshot.dead_letters), self.snapshot.dead_letter_count
        return f"{self.TITLE} [{shown} of {fmt.count(total)}]"

    def _chosen(self) -> list[DeadLetter]:
        if self.snapshot is None:
            return []
        by_id = {entry.id: entry for entry in self.snapshot.dead_letters}
        return [by_id[key] for key in self.selected() if key in by_id]

    def action_requeue(self) -> None:
        chosen = self._chosen()
        if not chosen:
            return
        queues = sorted({entry.queue for entry in chosen})
        self.request(
            CommandRequest(
                title="Requeue dead letter"
                if len(chosen) == 1
                else f"Requeue {len(chosen)} dead letters",
                summary=(
                    "Publish each message again, unchanged, to its queue "
                    f"({', '.join(queues)}) and "
                    "remove it from the dead letters."
                ),
                calls=tuple(Call("requeue_dead", (entry.id,)) for entry in chosen),
                items=bullet_list(_describe(entry) for entry in chosen),
            )
        )

    def action_delete(self) -> None:
        chosen = self._chosen()
        if not chosen:
            return
        self.request(
            CommandRequest(
                title="Delete dead letter"
                if len(chosen) == 1
                else f"Delete {len(chosen)} dead letters",
                summary=(
                    f"Permanently delete {len(chosen)} message(s) from the dead letters in Redis. "
                    "They will not run again. This cannot be undone."
                ),
                calls=tuple(Call("delete_dead", (entry.id,)) for entry in chosen),
                items=bullet_list(_describe(entry) for entry in chosen),
                typed="delete",
                danger=True,
            )
        )


def _describe(entry: DeadLetter) -> str:
    return f"{entry.id}  {entry.task_name or '?'}  ({entry.reason})"
