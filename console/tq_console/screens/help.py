"""``HelpScreen``: every key of the current view and of the console, with what it does.

Also builds the help's sections and the command palette's entries from the active bindings.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

# Display names of keys whose binding has no key_display.
_KEY_NAMES = {
    "question_mark": "?",
    "slash": "/",
    "colon": ":",
    "plus": "+",
    "minus": "-",
    "escape": "esc",
}


class HelpScreen(ModalScreen[None]):
    """Sections of ``(key, description)`` pairs; escape or ``?`` closes.

    Args:
        sections: ``(title, [(key, description), ...])`` in display order.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, sections: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        sections = [(title, keys) for title, keys in self.sections if keys]
        half = (len(sections) + 1) // 2
        with VerticalScroll(id="dialog") as dialog:
            dialog.border_title = "Keys"
            dialog.border_subtitle = "esc to close"
            with Horizontal(id="help-columns"):
                for column in (sections[:half], sections[half:]):
                    with Vertical(classes="help-column"):
                        for title, keys in column:
                            yield Static(Text(title, style="bold underline"), classes="help-title")
                            yield Static(_key_table(keys), classes="help-keys")

    def action_close(self) -> None:
        self.dismiss(None)


def _key_table(keys: Sequence[tuple[str, str]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold #FFA62B", no_wrap=True, min_width=6)
    table.add_column()
    for key, description in keys:
        table.add_row(key, description)
    return table


def help_sections(
    screen: Screen[Any], view_keys: Sequence[str]
) -> list[tuple[str, list[tuple[str, str]]]]:
    """The help for ``screen``: its own keys, its table's keys, then the console's keys.

    Args:
        screen: The screen help was asked on.
        view_keys: Keys that switch views (listed once, as the "Views" section).
    """
    own: list[tuple[str, str]] = []
    table_keys: list[tuple[str, str]] = []
    general: list[tuple[str, str]] = []
    views: list[tuple[str, str]] = []
    seen: set[str] = set()
    for key, active in screen.active_bindings.items():
        binding = active.binding
        shown = binding.key_display or _KEY_NAMES.get(key, key)
        if not binding.description or {shown, binding.action} & seen or key.isupper():
            continue
        seen |= {shown, binding.action}
        if key in view_keys:
            views.append((shown, binding.description))
        elif "." in binding.action:  # Textual's own (focus, copy): not ours to explain
            continue
        elif active.node is screen:
            own.append((shown, binding.description))
        elif active.node is screen.app:
            general.append((shown, binding.description))
    table = getattr(screen, "table", None)
    if table is not None:
        table_keys.append(("space", "Mark / unmark the row (actions apply to marked rows)"))
        for column in getattr(table, "COLUMNS", ()):
            if column.sort_key:
                table_keys.append(
                    (f"shift+{column.sort_key.lower()}", f"Sort by {column.label.lower()}")
                )
    general = [(k, "Command palette" if k == "ctrl+p" else d) for k, d in general]
    title = getattr(screen, "TITLE", "This view")
    return [(title, own), ("Table", table_keys), ("Views", views), ("Console", general)]


def palette_commands(screen: Screen[Any]) -> Iterator[SystemCommand]:
    """The command palette entries for the actions ``screen`` binds (and has enabled now)."""
    for key, active in screen.active_bindings.items():
        binding = active.binding
        if active.node is screen and binding.description and active.enabled:
            title = getattr(screen, "TITLE", "")
            yield SystemCommand(
                f"{title}: {binding.description}",
                f"key {binding.key_display or _KEY_NAMES.get(key, key)}",
                partial(screen.app.run_action, binding.action, screen),
            )
