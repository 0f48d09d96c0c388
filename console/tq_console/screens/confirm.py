"""``ConfirmScreen``: a modal that says exactly what an action will do and returns True or False.

Destructive requests carry a word to type (the queue name, ``terminate``, ``delete``); the
confirm button stays disabled until it is typed. Escape, ``n`` or Cancel return False.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from tq_console.messages import CommandRequest


class ConfirmScreen(ModalScreen[bool]):
    """Ask before running ``request``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("n", "cancel", "No", show=False),
        Binding("y", "confirm", "Yes", show=False),
    ]

    def __init__(self, request: CommandRequest) -> None:
        super().__init__(classes="danger" if request.danger else "")
        self.request = request

    def compose(self) -> ComposeResult:
        request = self.request
        with Vertical(id="dialog") as dialog:
            dialog.border_title = request.title
            yield Static(request.summary, id="summary")
            if request.items:
                items = Text("\n".join(f"• {item}" for item in request.items))
                yield Static(items, id="items")
            if request.typed:
                yield Static(
                    Text.assemble("Type ", (request.typed, "bold"), " to confirm:"),
                    id="typed-label",
                )
                yield Input(placeholder=request.typed, id="typed")
            with Horizontal(id="buttons"):
                yield Button("Cancel", id="cancel")
                verb = request.title.split()[0]
                yield Button(
                    verb,
                    id="confirm",
                    variant="error" if request.danger else "primary",
                    disabled=request.typed is not None,
                )

    def on_mount(self) -> None:
        if self.request.typed:
            self.query_one("#typed", Input).focus()
        else:
            self.query_one("#confirm", Button).focus()

    @property
    def is_ready(self) -> bool:
        """Whether the typed confirmation (if any) matches."""
        if self.request.typed is None:
            return True
        return self.query_one("#typed", Input).value.strip() == self.request.typed

    @on(Input.Changed, "#typed")
    def _typed_changed(self) -> None:
        self.query_one("#confirm", Button).disabled = not self.is_ready

    @on(Input.Submitted, "#typed")
    def _typed_submitted(self) -> None:
        if self.is_ready:
            self.dismiss(True)
        else:
            self.notify(f"Type {self.request.typed!r} exactly to confirm", severity="warning")

    @on(Button.Pressed, "#confirm")
    def _confirm_pressed(self) -> None:
        self.action_confirm()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    def action_confirm(self) -> None:
        if self.is_ready:
            self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)
