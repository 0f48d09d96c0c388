"""``TasksScreen``: active, reserved, scheduled and recent tasks.

Enter opens the task's detail (with its traceback); ``k`` revokes, ``ctrl+k`` terminates (typed
confirmation), ``r`` sends again, ``l`` changes the task type's rate limit. Row actions apply to
the marked rows, or to the cursor row when none are marked.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from tq.worker.snapshot import RequestInfo, Snapshot
from tq_console import format as fmt
from tq_console.messages import Call, CommandRequest
from tq_console.screens.base import ViewScreen, bullet_list
from tq_console.screens.rate_limit import RateLimitScreen
from tq_console.screens.task_detail import TaskDetailScreen
from tq_console.widgets.task_table import TaskTable, tasks_by_id


class TasksScreen(ViewScreen):
    """The tasks view."""

    VIEW = "tasks"
    TITLE = "Tasks"
    MUTATING = frozenset({"revoke", "terminate", "retry", "rate_limit"})

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "detail", "Detail", show=False),
        Binding("k", "revoke", "Revoke"),
        Binding("ctrl+k", "terminate", "Terminate", key_display="^k"),
        Binding("r", "retry", "Retry"),
        Binding("l", "rate_limit", "Rate limit"),
    ]

    def __init__(self, views: tuple[tuple[str, str, str], ...], *, read_only: bool = False) -> None:
        super().__init__(views, read_only=read_only)
        self.tasks: dict[str, tuple[str, RequestInfo]] = {}

    def compose_body(self) -> ComposeResult:
        yield TaskTable(id="task-table")

    def render_snapshot(self, snapshot: Snapshot) -> None:
        self.tasks = tasks_by_id(
            snapshot.active, snapshot.reserved, snapshot.scheduled, snapshot.recent
        )
        self.query_one(TaskTable).update(
            snapshot.active,
            snapshot.reserved,
            snapshot.scheduled,
            snapshot.recent,
            snapshot.taken_at,
        )

    def body_title(self) -> str:
        if self.snapshot is None:
            return self.TITLE
        s = self.snapshot
        return (
            f"{self.TITLE} [{len(s.active)} active · {len(s.reserved)} reserved · "
            f"{len(s.scheduled)} scheduled · {len(s.recent)} recent]"
        )

    def _chosen(self) -> list[RequestInfo]:
        return [self.tasks[key][1] for key in self.selected() if key in self.tasks]

    @on(DataTable.RowSelected, "#task-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_detail()

    def action_detail(self) -> None:
        table = self.query_one(TaskTable)
        key = table.cursor_key
        if key is None or key not in self.tasks or self.snapshot is None:
            return
        kind, request = self.tasks[key]
        self.app.push_screen(TaskDetailScreen(request, kind, self.snapshot.taken_at))

    def action_revoke(self) -> None:
        chosen = self._chosen()
        if not chosen:
            return
        self.request(
            CommandRequest(
                title="Revoke task" if len(chosen) == 1 else f"Revoke {len(chosen)} tasks",
                summary=(
                    "Mark as revoked: a reserved or scheduled task is discarded when its turn "
                    "comes, "
                    "and a task not yet received here is dropped on arrival. A running task keeps "
                    "running (use ctrl+k to terminate it)."
                ),
                calls=tuple(Call("revoke", (task.task_id,)) for task in chosen),
                items=bullet_list(_describe(task) for task in chosen),
            )
        )

    def action_terminate(self) -> None:
        chosen = self._chosen()
        if not chosen:
            return
        self.request(
            CommandRequest(
                title="Terminate task" if len(chosen) == 1 else f"Terminate {len(chosen)} tasks",
                summary=(
                    "Revoke and send SIGTERM to the pool child running each task. The task stops "
                    "mid-way and is recorded as REVOKED; work it had done is not rolled back."
                ),
                calls=tuple(
                    Call("revoke", (task.task_id,), {"terminate": True, "signal": "SIGTERM"})
                    for task in chosen
                ),
                items=bullet_list(_describe(task) for task in chosen),
                typed="terminate",
                danger=True,
            )
        )

    def action_retry(self) -> None:
        chosen = self._chosen()
        if not chosen:
            return
        self.request(
            CommandRequest(
                title="Retry task" if len(chosen) == 1 else f"Retry {len(chosen)} tasks",
                summary=(
                    "Send each task again with its original arguments and options, to its original "
                    "queue. The new run has the same task id."
                ),
                calls=tuple(Call("retry", (task.task_id,)) for task in chosen),
                items=bullet_list(_describe(task) for task in chosen),
            )
        )

    def action_rate_limit(self) -> None:
        chosen = self._chosen()
        if not chosen or self.snapshot is None:
            return
        name = chosen[0].name
        rates = {bucket.task_name: bucket.rate for bucket in self.snapshot.buckets}
        self.app.push_screen(RateLimitScreen(name, rates.get(name, "")), self._rate_chosen)

    def _rate_chosen(self, request: CommandRequest | None) -> None:
        if request is not None:
            self.request(request)


def _describe(task: RequestInfo) -> str:
    return f"{fmt.short_id(task.task_id)}  {task.name}  [{task.state.lower()}]"
