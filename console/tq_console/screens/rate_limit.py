"""``RateLimitScreen``: an input modal for a task type's rate limit.

It shows, as the user types, exactly what will be set, and returns the ``CommandRequest`` (or
None on escape). The input itself is the confirmation, so the request is marked
``confirm=False``.
"""

from __future__ import annotations

import re
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from tq_console.messages import Call, CommandRequest

#: Celery's rate-limit syntax: a number of tasks, optionally per second, minute or hour.
RATE_PATTERN = re.compile(r"^\d+(\.\d+)?(/[smh])?$")


def is_valid_rate(text: str) -> bool:
    """Whether ``text`` is a rate limit Celery accepts ("" and "0" remove the limit)."""
    return text == "" or bool(RATE_PATTERN.match(text))


class RateLimitScreen(ModalScreen[CommandRequest | None]):
    """Ask for the new rate limit of ``task_name`` (currently ``current``)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, task_name: str, current: str) -> None:
        super().__init__()
        self.task_name = task_name
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as dialog:
            dialog.border_title = "Change rate limit"
            yield Static(
                Text.assemble(
                    "Rate limit of ",
                    (self.task_name, "bold"),
                    " on this worker, now ",
                    (self.current or "none", "bold"),
                    ".\nExamples: 10/s, 100/m, 1000/h. Empty or 0 removes the limit.",
                ),
                id="summary",
            )
            yield Input(value=self.current, placeholder="e.g. 10/s", id="rate")
            yield Static(id="preview")

    def on_mount(self) -> None:
        self._preview(self.current)

    @on(Input.Changed, "#rate")
    def _changed(self, event: Input.Changed) -> None:
        self._preview(event.value.strip())

    def _preview(self, rate: str) -> None:
        preview = self.query_one("#preview", Static)
        if not is_valid_rate(rate):
            preview.update(Text("Not a rate: use N, N/s, N/m or N/h", style="bold red"))
        elif rate in ("", "0"):
            preview.update(Text(f"Enter removes the rate limit of {self.task_name}."))
        else:
            was = self.current or "none"
            text = f"Enter sets the rate limit of {self.task_name} to {rate} (was {was})."
            preview.update(Text(text))

    @on(Input.Submitted, "#rate")
    def _submitted(self, event: Input.Submitted) -> None:
        rate = event.value.strip()
        if not is_valid_rate(rate):
            self.notify("Not a rate: use N, N/s, N/m or N/h", severity="warning")
            return
        shown = rate if rate not in ("", "0") else "no limit"
        was = self.current or "none"
        self.dismiss(
            CommandRequest(
                title="Change rate limit",
                summary=f"Set the rate limit of {self.task_name} to {shown} (was {was}).",
                calls=(Call("set_rate_limit", (self.task_name, rate)),),
                confirm=False,
            )
        )

    def action_cancel(self) -> None:
        self.dismiss(None)
