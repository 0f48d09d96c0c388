"""``ShutdownScreen``: the warm shutdown in progress, shown until the runtime has stopped.

It follows snapshots (state, tasks still running) while the app waits for ``stop`` in a thread
worker. Pressing ``q`` again quits without waiting.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import LoadingIndicator, Static

from tq.worker.snapshot import Snapshot
from tq_console import format as fmt


class ShutdownScreen(ModalScreen[None]):
    """Warm shutdown of ``hostname`` with a deadline of ``timeout`` seconds."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("q,ctrl+c", "app.force_quit", "Quit now")]

    def __init__(self, hostname: str, timeout: float) -> None:
        super().__init__()
        self.hostname = hostname
        self.timeout = timeout
        self.ready = False

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as dialog:
            dialog.border_title = "Warm shutdown"
            dialog.border_subtitle = "q again: quit without waiting"
            yield Static(id="shutdown-text")
            yield LoadingIndicator()

    def on_mount(self) -> None:
        self.ready = True
        self.show_text(None)

    def show_snapshot(self, snapshot: Snapshot) -> None:
        """Follow the runtime while it stops."""
        if self.ready:
            self.show_text(snapshot)

    def show_text(self, snapshot: Snapshot | None, done: str | None = None) -> None:
        """Say what the shutdown is doing; ``done`` is the final word once ``stop`` returned."""
        if not self.ready:
            return
        text = Text.assemble("Stopping ", (self.hostname, "bold"), ": no new tasks are taken; ")
        text.append(f"running tasks may finish (up to {fmt.duration(self.timeout)}).")
        if snapshot is not None:
            text.append(f"\nstate {snapshot.state}", "bold")
            text.append(
                f" · {len(snapshot.active)} task(s) running · {len(snapshot.reserved)} reserved"
            )
        if done:
            text.append(f"\n{done}", "bold")
        self.query_one("#shutdown-text", Static).update(text)
