"""``TaskTable``: the tasks this worker knows, active first, then reserved, scheduled, recent.

Rows are keyed by task id, so a task moving from reserved to active to succeeded changes its
cells in place. Fed by ``update``; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from tq.worker.snapshot import RequestInfo
from tq_console import format as fmt
from tq_console.widgets import _palette
from tq_console.widgets.keyed_table import Cell, Column, KeyedTable

#: Where a task was found in the snapshot, in display order.
KINDS = ("active", "reserved", "scheduled", "recent")


def tasks_by_id(
    active: Sequence[RequestInfo],
    reserved: Sequence[RequestInfo],
    scheduled: Sequence[RequestInfo],
    recent: Sequence[RequestInfo],
) -> dict[str, tuple[str, RequestInfo]]:
    """Each task once, keyed by id, with the first list it appears in (in :data:`KINDS` order).

    Within a list: active and reserved keep the worker's order, scheduled tasks come soonest
    first and recent ones newest first (by when they finished, else when they arrived).
    """
    found: dict[str, tuple[str, RequestInfo]] = {}
    scheduled = sorted(scheduled, key=lambda r: r.eta if r.eta is not None else float("inf"))
    recent = sorted(recent, key=lambda r: -(r.finished_at or r.received_at))
    for kind, group in zip(KINDS, (active, reserved, scheduled, recent), strict=True):
        for request in group:
            found.setdefault(request.task_id, (kind, request))
    return found


class TaskTable(KeyedTable):
    """Tasks: state, id, name, queue, worker, runtime, age and arguments."""

    COLUMNS = (
        Column("state", "State", 11, sort_key="S"),
        Column("task_id", "Task ID", 8, sort_key="I"),
        Column("name", "Task", 20, sort_key="N"),
        Column("queue", "Queue", 9, sort_key="Q"),
        Column("worker", "Worker", 11, sort_key="W"),
        Column("runtime", "Runtime", 8, sort_key="R", justify="right"),
        Column("age", "Received", 9, sort_key="A"),
        Column("args", "Arguments", 16, flex=True),
    )

    def update(
        self,
        active: Sequence[RequestInfo],
        reserved: Sequence[RequestInfo],
        scheduled: Sequence[RequestInfo],
        recent: Sequence[RequestInfo],
        now: float,
    ) -> None:
        """Show every task of the four lists once, measured at ``now``."""
        found = tasks_by_id(active, reserved, scheduled, recent)
        self.sync(self._rows_for(found, now))

    def _rows_for(
        self, found: dict[str, tuple[str, RequestInfo]], now: float
    ) -> Iterator[tuple[str, list[Cell]]]:
        for task_id, (kind, request) in found.items():
            yield task_id, self._cells(kind, request, now)

    @staticmethod
    def _cells(kind: str, request: RequestInfo, now: float) -> list[Cell]:
        state = "SCHEDULED" if kind == "scheduled" else request.state
        style, glyph = _palette.TASK_STATE.get(state, ("", "·"))
        runtime = request.runtime
        if runtime is None and request.started_at is not None and kind == "active":
            runtime = now - request.started_at
        worker = request.worker or (f"pid {request.worker_pid}" if request.worker_pid else "")
        age = Cell(fmt.ago(request.received_at, now), _palette.DIM, sort=-request.received_at)
        if kind == "scheduled" and request.eta is not None:
            age = Cell(fmt.until(request.eta, now), _palette.MAGENTA, sort=-request.received_at)
        return [
            Cell(f"{glyph} {state.lower()}", style, sort=(KINDS.index(kind), state)),
            Cell(fmt.short_id(request.task_id), _palette.DIM, sort=request.task_id),
            Cell(request.name, "bold"),
            Cell(request.queue),
            Cell(worker, _palette.DIM),
            Cell(
                fmt.duration(runtime) if runtime is not None else "",
                sort=runtime or 0.0,
                justify="right",
            ),
            age,
            Cell(fmt.call_repr(request.args_repr, request.kwargs_repr), _palette.TEXT),
        ]
