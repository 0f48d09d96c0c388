"""``TaskDetailScreen``: a modal with everything the snapshot knows about one task.

Headers, arguments, timings, result or exception, and the traceback highlighted as Python.
"""

from __future__ import annotations

from typing import ClassVar

from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tq.worker.snapshot import RequestInfo
from tq_console import format as fmt


def detail_rows(request: RequestInfo, kind: str, now: float) -> list[tuple[str, str]]:
    """The (field, value) lines shown for ``request``, found in snapshot list ``kind``."""
    rows = [
        ("Task ID", request.task_id),
        ("Name", request.name),
        ("State", f"{request.state} ({kind})"),
        ("Queue", request.queue),
        (
            "Worker",
            request.worker or (f"pid {request.worker_pid}" if request.worker_pid else fmt.NONE),
        ),
        ("Args", request.args_repr or "()"),
        ("Kwargs", request.kwargs_repr or "{}"),
        ("Retries", str(request.retries)),
        (
            "Received",
            f"{fmt.timestamp(request.received_at)}  ({fmt.ago(request.received_at, now)})",
        ),
        ("Started", fmt.timestamp(request.started_at)),
        ("Finished", fmt.timestamp(request.finished_at)),
        ("Runtime", fmt.duration(request.runtime)),
    ]
    if request.eta is not None:
        rows.append(("ETA", f"{fmt.timestamp(request.eta)}  ({fmt.until(request.eta, now)})"))
    if request.result_repr is not None:
        rows.append(("Result", request.result_repr))
    if request.exception is not None:
        rows.append(("Exception", request.exception))
    return rows


class TaskDetailScreen(ModalScreen[None]):
    """Show one task; escape, enter or q closes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,enter", "close", "Close"),
    ]

    def __init__(self, request: RequestInfo, kind: str, now: float) -> None:
        super().__init__()
        self.request = request
        self.kind = kind
        self.now = now

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog") as dialog:
            dialog.border_title = f"Task {fmt.short_id(self.request.task_id)} · {self.request.name}"
            dialog.border_subtitle = "esc to close"
            table = Table.grid(padding=(0, 2))
            table.add_column(style="dim", no_wrap=True)
            table.add_column()
            for name, value in detail_rows(self.request, self.kind, self.now):
                style = "bold red" if name == "Exception" else ""
                table.add_row(name, Text(value, style=style))
            yield Static(table, id="fields")
            if self.request.traceback:
                yield Static(Text("Traceback", style="bold"), classes="section")
                yield Static(
                    Syntax(
                        self.request.traceback.rstrip(), "pytb", theme="ansi_dark", word_wrap=True
                    ),
                    id="traceback",
                )

    def action_close(self) -> None:
        self.dismiss(None)
