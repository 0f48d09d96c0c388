"""``QueuesScreen``: consumed queues; purge (``x``, typed confirmation) and pause/resume (``s``).

Also defines ``purge_request``, the wording of the purge confirmation, which the app fills in
once it has counted the queue's messages.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from tq.worker.snapshot import QueueInfo, Snapshot
from tq_console import format as fmt
from tq_console.messages import Call, CommandRequest, PurgeRequested
from tq_console.screens.base import ViewScreen, bullet_list
from tq_console.widgets.queue_table import QueueTable


def purge_request(queue: str, count: int, unacked: int = 0) -> CommandRequest:
    """The confirmation for purging ``queue``, which holds ``count`` ready messages."""
    held = (
        f" The {fmt.count(unacked)} unacked messages of this queue are not touched."
        if unacked
        else ""
    )
    return CommandRequest(
        title="Purge queue",
        summary=(
            f"Delete all {fmt.count(count)} ready messages from queue '{queue}' in Redis "
            f"(every priority). This cannot be undone.{held}"
        ),
        calls=(Call("purge", (queue,)),),
        typed=queue,
        danger=True,
    )


class QueuesScreen(ViewScreen):
    """The queues view."""

    VIEW = "queues"
    TITLE = "Queues"
    MUTATING = frozenset({"purge", "toggle_pause"})

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("x", "purge", "Purge"),
        Binding("s", "toggle_pause", "Pause/resume"),
    ]

    def compose_body(self) -> ComposeResult:
        yield QueueTable(id="queue-table")

    def render_snapshot(self, snapshot: Snapshot) -> None:
        self.query_one(QueueTable).update(snapshot.queues, snapshot.unacked.visibility_timeout)

    def _queues(self) -> list[QueueInfo]:
        if self.snapshot is None:
            return []
        by_name = {queue.name: queue for queue in self.snapshot.queues}
        return [by_name[key] for key in self.selected() if key in by_name]

    def action_purge(self) -> None:
        if self.read_only:
            return
        queues = self._queues()
        if not queues:
            return
        queue = queues[0]
        self.post_message(PurgeRequested(queue.name, queue.unacked))

    def action_toggle_pause(self) -> None:
        queues = self._queues()
        if not queues or self.snapshot is None:
            return
        pause = any(queue.consuming for queue in queues)
        names = [queue.name for queue in queues if queue.consuming == pause]
        host = self.snapshot.hostname
        if pause:
            summary = (
                f"Stop consuming from {len(names)} queue(s) on {host}. Messages stay in Redis and "
                "other workers keep consuming; tasks already received here still run."
            )
        else:
            summary = f"Start consuming from {len(names)} queue(s) on {host} again."
        command = "pause_queue" if pause else "resume_queue"
        self.request(
            CommandRequest(
                title="Pause queue" if pause else "Resume queue",
                summary=summary,
                calls=tuple(Call(command, (name,)) for name in names),
                items=bullet_list(names),
            )
        )
