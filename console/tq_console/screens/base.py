"""``ViewScreen``: what every view shares — status line, view tabs, failure banner, a titled
body, the ``/`` filter and ``:`` jump prompt, marks, save, and the read-only guard.

The app pushes data in (``show_snapshot``, ``show_status``); a view never fetches. Views that
act on rows post ``CommandRequested`` (or another request message) and the app confirms and
runs it. May import widgets, messages, format and ``tq.worker.snapshot`` only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.widgets import Footer, Input

from tq.worker.snapshot import Snapshot
from tq_console.messages import CommandRequest, CommandRequested, SaveRequested
from tq_console.widgets.failure_banner import FailureBanner
from tq_console.widgets.keyed_table import KeyedTable
from tq_console.widgets.status_bar import StatusBar
from tq_console.widgets.view_tabs import ViewTabs

#: Longest wait between polls while the runtime is unreachable (the wait doubles per failure).
MAX_RETRY_S = 10.0


@dataclass(frozen=True, slots=True)
class ConsoleStatus:
    """The app's state every view shows in its status line and banner."""

    live: bool = True
    interval: float = 2.0
    read_only: bool = False
    title: str = "tq"
    failure: str | None = None
    attempt: int = 0

    @property
    def retry_s(self) -> float:
        """Seconds until the next poll: the interval, doubled after each failure in a row."""
        if self.failure is None:
            return self.interval
        return min(MAX_RETRY_S, self.interval * 2.0 ** min(self.attempt - 1, 16))


class ViewScreen(Screen[None]):
    """Base of every view. Subclasses set ``VIEW`` and ``TITLE``, compose their body and render
    snapshots in ``render_snapshot``; actions that change anything are named in ``MUTATING``.

    Args:
        views: ``(key, name, title)`` of every view, for the tab row and the ``:`` prompt.
        read_only: Hide and refuse every action named in ``MUTATING``.
    """

    VIEW: ClassVar[str] = ""
    TITLE: ClassVar[str] = ""
    AUTO_FOCUS = "KeyedTable"  # never the hidden prompt
    #: Actions that change the worker; unbound (hidden, refused) in read-only mode.
    MUTATING: ClassVar[frozenset[str]] = frozenset()

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("colon", "jump", "View", key_display=":"),
        Binding("escape", "clear", "Clear the filter, then the marks", show=False),
        Binding("ctrl+s", "save", "Save", key_display="^s"),
    ]

    def __init__(self, views: Sequence[tuple[str, str, str]], *, read_only: bool = False) -> None:
        super().__init__(name=self.VIEW)
        self.views = tuple(views)
        self.read_only = read_only
        self.snapshot: Snapshot | None = None
        self.status = ConsoleStatus(read_only=read_only)
        self._prompt_mode = ""
        self.ready = False  # set once mounted with children (is_mounted comes earlier)

    # -- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status-bar")
        yield ViewTabs(self.views, self.VIEW)
        yield FailureBanner(id="failure-banner")
        with Vertical(id="body"):
            yield from self.compose_body()
        yield Input(id="prompt")
        yield Footer()

    def compose_body(self) -> ComposeResult:
        """The view's own widgets."""
        yield from ()

    def on_mount(self) -> None:
        self.ready = True
        self._show_status()
        if self.snapshot is not None:
            self._render_view(self.snapshot)
        table = self.table
        if table is not None:
            table.focus()

    def on_unmount(self) -> None:
        self.ready = False

    @property
    def table(self) -> KeyedTable | None:
        """The view's main table, if it has one."""
        tables = self.query(KeyedTable)
        return tables.first() if tables else None

    # -- fed by the app --------------------------------------------------------------------

    def show_snapshot(self, snapshot: Snapshot) -> None:
        """Render ``snapshot`` now if mounted, else when mounted."""
        self.snapshot = snapshot
        if self.ready:
            self._render_view(snapshot)

    def show_status(self, status: ConsoleStatus) -> None:
        """Show the app's ``status`` (live or paused, failure banner)."""
        self.status = status
        if self.ready:
            self._show_status()

    def _render_view(self, snapshot: Snapshot) -> None:
        self.query_one(StatusBar).update(
            snapshot,
            live=self.status.live,
            interval=self.status.interval,
            read_only=self.read_only,
            title=self.status.title,
        )
        self.render_snapshot(snapshot)
        self.refresh_title()

    def _show_status(self) -> None:
        status = self.status
        self.query_one(StatusBar).update(
            self.snapshot,
            live=status.live,
            interval=status.interval,
            read_only=self.read_only,
            title=status.title,
        )
        self.query_one(FailureBanner).update(status.failure, status.attempt, status.retry_s)

    def render_snapshot(self, snapshot: Snapshot) -> None:
        """Update the view's widgets from ``snapshot``."""

    def body_title(self) -> str:
        """The body's border title; by default the view title and the table's row count."""
        table = self.table
        if table is None:
            return self.TITLE
        return f"{self.TITLE} [{table.row_count}]"

    def refresh_title(self) -> None:
        """Redraw the body's title and subtitle (filter, sort, marks)."""
        body = self.query_one("#body")
        body.border_title = self.body_title()
        table = self.table
        notes = []
        if table is not None:
            if table.filter_text:
                notes.append(f"filter /{table.filter_text}")
            if table.sort_description:
                notes.append(f"sort {table.sort_description}")
            if table.marked:
                notes.append(f"{len(table.marked)} marked")
        body.border_subtitle = "  ·  ".join(notes)

    # -- read-only guard -------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (self.read_only and action in self.MUTATING)

    def request(self, request: CommandRequest) -> None:
        """Ask the app to confirm and run ``request`` (refused in read-only mode)."""
        if self.read_only:
            self.notify("Read-only console: actions are disabled", severity="warning")
            return
        self.post_message(CommandRequested(request))

    # -- prompt: / filter and : jump -------------------------------------------------------

    def action_filter(self) -> None:
        table = self.table
        if table is None:
            return
        self._open_prompt(
            "filter", "filter rows… (enter to apply, esc to clear)", table.filter_text
        )

    def action_jump(self) -> None:
        names = [name for _, name, _ in self.views]
        prompt = self._open_prompt("jump", "view name: " + " ".join(names), "")
        prompt.suggester = SuggestFromList(names, case_sensitive=False)

    def _open_prompt(self, mode: str, placeholder: str, value: str) -> Input:
        prompt = self.query_one("#prompt", Input)
        self._prompt_mode = mode
        prompt.placeholder = placeholder
        prompt.suggester = None
        prompt.value = value
        prompt.border_title = "/" if mode == "filter" else ":"
        prompt.add_class("-open")
        prompt.focus()
        return prompt

    def _close_prompt(self) -> None:
        prompt = self.query_one("#prompt", Input)
        prompt.remove_class("-open")
        self._prompt_mode = ""
        table = self.table
        if table is not None:
            table.focus()

    @on(Input.Changed, "#prompt")
    def _prompt_changed(self, event: Input.Changed) -> None:
        table = self.table
        if self._prompt_mode == "filter" and table is not None:
            table.set_filter(event.value.strip())
            self.refresh_title()

    @on(Input.Submitted, "#prompt")
    async def _prompt_submitted(self, event: Input.Submitted) -> None:
        mode, value = self._prompt_mode, event.value.strip()
        self._close_prompt()
        if mode == "jump" and value:
            name = self.resolve_view(value)
            if name is None:
                self.notify(f"No view called {value!r}", severity="warning")
            else:
                await self.app.run_action(f"switch_view('{name}')")

    def resolve_view(self, text: str) -> str | None:
        """The view a typed name means: exact, key, or unique prefix of a name or title."""
        text = text.lower().lstrip(":")
        for key, name, title in self.views:
            if text in (key, name, title.lower()):
                return name
        matches = [
            name
            for _, name, title in self.views
            if name.startswith(text) or title.lower().startswith(text)
        ]
        return matches[0] if len(matches) == 1 else None

    def action_clear(self) -> None:
        """Escape: close the prompt, else clear the filter, else clear the marks."""
        table = self.table
        if self.query_one("#prompt", Input).has_class("-open"):
            if self._prompt_mode == "filter" and table is not None:
                table.set_filter("")
            self._close_prompt()
        elif table is not None and table.filter_text:
            table.set_filter("")
        elif table is not None and table.marked:
            table.clear_marks()
        self.refresh_title()

    def on_keyed_table_changed(self, message: KeyedTable.Changed) -> None:
        self.refresh_title()

    # -- save ------------------------------------------------------------------------------

    def action_save(self) -> None:
        table = self.table
        if table is None:
            self.notify("This view has no table to save", severity="warning")
            return
        headers, rows = table.export()
        self.post_message(SaveRequested(self.VIEW, headers, rows))

    # -- helpers for subclasses ------------------------------------------------------------

    def selected(self) -> list[str]:
        """Keys of the marked rows, or of the cursor row when nothing is marked."""
        table = self.table
        return [] if table is None else table.selected_keys()


def bullet_list(items: Iterable[str], limit: int = 8) -> tuple[str, ...]:
    """At most ``limit`` items, the rest summed up as ``"… and 3 more"``."""
    items = list(items)
    shown = items[:limit]
    if len(items) > limit:
        shown.append(f"… and {len(items) - limit} more")
    return tuple(shown)
