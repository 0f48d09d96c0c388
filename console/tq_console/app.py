"""``ConsoleApp``: the Textual console — views as modes, global keys, and the bridge's workers.

The app holds no data logic. It polls ``bridge.snapshot()`` in a thread worker (the next poll is
scheduled only after the last one finished), hands each snapshot to the visible view, confirms
and runs the commands views request in thread workers, and stops the embedded runtime on ``q``.
No bridge call ever runs on Textual's event loop.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.worker import Worker, get_current_worker

from tq.worker.snapshot import CommandResult, Snapshot
from tq_console import format as fmt
from tq_console.bridge import Bridge, operator_name, run_calls
from tq_console.messages import (
    ActionLogReady,
    CommandFinished,
    CommandRequest,
    CommandRequested,
    PurgeRequested,
    QueueCounted,
    RuntimeFailed,
    RuntimeStopped,
    SaveRequested,
    SnapshotReady,
    TableSaved,
)
from tq_console.screens import VIEWS, ActionLogScreen, ViewScreen
from tq_console.screens.base import ConsoleStatus
from tq_console.screens.confirm import ConfirmScreen
from tq_console.screens.help import HelpScreen, help_sections, palette_commands
from tq_console.screens.queues import purge_request
from tq_console.screens.save import SaveScreen
from tq_console.screens.shutdown import ShutdownScreen

log = logging.getLogger(__name__)

#: Bounds of the poll interval, in seconds ([ and ] halve and double it).
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.25, 60.0
#: Seconds the "stopped" message stays on screen before the app exits.
EXIT_DELAY_S = 0.4
#: App actions still allowed while a modal is open.
_MODAL_SAFE = frozenset({"force_quit", "command_palette", "shutdown"})


class ConsoleApp(App[None]):
    """The tq console.

    Args:
        bridge: Where snapshots come from and commands go (``RuntimeBridge`` or ``ReplayBridge``).
        read_only: Unbind every key that changes the worker.
        title: Shown at the left of the status line.
        interval: Seconds between the end of one poll and the start of the next.
        shutdown_timeout: Seconds ``bridge.stop`` may take on ``q``.
        export_dir: Default folder for ``ctrl+s``.
        operator: Who the action log names; defaults to ``user@host``.
    """

    CSS_PATH = "styles.tcss"
    DEFAULT_MODE = "overview"

    BINDINGS: ClassVar[list[BindingType]] = [
        *(
            Binding(key, f"switch_view('{screen.VIEW}')", screen.TITLE, show=False)
            for key, screen in VIEWS
        ),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("p", "toggle_live", "Pause"),
        Binding("ctrl+r", "refresh", "Refresh", show=False),
        Binding(
            "left_square_bracket", "scale_interval(2)", "Poll slower", show=False, key_display="["
        ),
        Binding(
            "right_square_bracket",
            "scale_interval(0.5)",
            "Poll faster",
            show=False,
            key_display="]",
        ),
        Binding("q", "quit_warm", "Quit"),
        Binding("ctrl+q", "shutdown", show=False, priority=True),  # also from a modal
    ]

    def __init__(
        self,
        bridge: Bridge,
        *,
        read_only: bool = False,
        title: str = "tq",
        interval: float = 2.0,
        shutdown_timeout: float = 30.0,
        export_dir: str | os.PathLike[str] = ".",
        operator: str | None = None,
    ) -> None:
        super().__init__()
        self.bridge = bridge
        self.read_only = read_only
        self.title = title
        self.interval = interval
        self.shutdown_timeout = shutdown_timeout
        self.export_dir = Path(export_dir)
        self.operator = operator or operator_name()
        self.live, self.stopping, self.failures = True, False, 0
        self.latest: Snapshot | None = None
        self.failure: str | None = None
        self.views: dict[str, ViewScreen] = {}
        self._poll_timer: Timer | None = None
        tabs = tuple((key, screen.VIEW, screen.TITLE) for key, screen in VIEWS)
        for _, screen_class in VIEWS:
            self.add_mode(screen_class.VIEW, partial(self._make_view, screen_class, tabs))

    def _make_view(
        self, screen_class: type[ViewScreen], tabs: tuple[tuple[str, str, str], ...]
    ) -> Screen[Any]:
        view = screen_class(tabs, read_only=self.read_only)
        view.show_status(self.status)
        if self.latest is not None:
            view.show_snapshot(self.latest)
        self.views[view.VIEW] = view
        return view

    def on_mount(self) -> None:
        self.poll()

    @property
    def status(self) -> ConsoleStatus:
        status = (self.live, self.interval, self.read_only, self.title, self.failure)
        return ConsoleStatus(*status, attempt=self.failures)

    # -- polling -----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="snapshot", exit_on_error=False)
    def poll(self) -> None:
        """Take one snapshot in a thread and post it (or the failure)."""
        worker = get_current_worker()
        try:
            snapshot = self.bridge.snapshot()
        except Exception as exc:
            log.warning("snapshot failed: %s", exc)
            log.debug("snapshot failure", exc_info=True)
            if not worker.is_cancelled:
                self.post_message(RuntimeFailed(f"{type(exc).__name__}: {exc}"))
            return
        if not worker.is_cancelled:
            self.post_message(SnapshotReady(snapshot))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "snapshot" and event.worker.is_finished:
            self._schedule_poll()

    def _schedule_poll(self) -> None:
        if self._poll_timer is not None:
            self._poll_timer.stop()
            self._poll_timer = None
        if self.live:
            self._poll_timer = self.set_timer(self.status.retry_s, self.poll)

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        if not self.is_running:  # shutting down: the views may be gone
            return
        recovered = self.failure is not None
        self.latest = message.snapshot
        self.failure, self.failures = None, 0
        if recovered:
            self._push_status()
            self.notify("Runtime reachable again", title="Recovered")
        for screen in self.screen_stack:
            if isinstance(screen, (ViewScreen, ShutdownScreen)):
                screen.show_snapshot(message.snapshot)
        if isinstance(self.screen, ActionLogScreen):
            self.load_action_log()

    def on_runtime_failed(self, message: RuntimeFailed) -> None:
        if not self.is_running:
            return
        self.failure, self.failures = message.error, self.failures + 1
        self._push_status()

    def _push_status(self) -> None:
        status = self.status
        for screen in self.screen_stack:
            if isinstance(screen, ViewScreen):
                screen.show_status(status)

    # -- views -------------------------------------------------------------------------------

    async def action_switch_view(self, name: str) -> None:
        if name == self.current_mode:
            return
        await self.switch_mode(name)
        screen = self.screen
        if isinstance(screen, ViewScreen):
            screen.show_status(self.status)
            if self.latest is not None:
                screen.show_snapshot(self.latest)
        if isinstance(screen, ActionLogScreen):
            self.load_action_log()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not isinstance(self.screen, ModalScreen) or action in _MODAL_SAFE

    def action_toggle_live(self) -> None:
        self.live = not self.live
        self._push_status()
        self._schedule_poll()  # stops the timer when paused
        if self.live:
            self.poll()
        self.notify("Live updates on" if self.live else "Live updates paused (p to resume)")

    def action_refresh(self) -> None:
        self.poll()  # ctrl+r: now, even when paused

    def action_scale_interval(self, factor: float) -> None:
        """Poll ``factor`` times less often (``[`` doubles the interval, ``]`` halves it)."""
        self.interval = min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, self.interval * factor))
        self._push_status()
        self._schedule_poll()
        self.notify(f"Refreshing every {self.interval:g}s")

    def action_help(self) -> None:
        self.push_screen(HelpScreen(help_sections(self.screen, [key for key, _ in VIEWS])))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for key, view in VIEWS:
            go = partial(self.action_switch_view, view.VIEW)
            yield SystemCommand(f"Go to {view.TITLE}", f"key {key}", go)
        yield from palette_commands(screen)

    # -- commands ----------------------------------------------------------------------------

    def on_command_requested(self, message: CommandRequested) -> None:
        message.stop()
        self.confirm_and_run(message.request)

    def confirm_and_run(self, request: CommandRequest) -> None:
        """Confirm ``request`` in a modal (unless it says it needs none), then run it."""
        if self.read_only:
            self.notify("Read-only console: actions are disabled", severity="warning")
            return
        if not request.confirm:
            self.run_request(request)
            return

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.run_request(request)

        self.push_screen(ConfirmScreen(request), confirmed)

    @work(thread=True, group="command", exit_on_error=False)
    def run_request(self, request: CommandRequest) -> None:
        """Run the calls of ``request`` in a thread, record each in the action log, post results."""
        results = run_calls(self.bridge, request.calls, self.operator)
        self.post_message(CommandFinished(request, results))

    def on_command_finished(self, message: CommandFinished) -> None:
        results = message.results
        failed = [result for result in results if not result.ok]
        if len(results) == 1:
            text = results[0].message
        else:
            text = f"{len(results) - len(failed)} of {len(results)} succeeded"
            if failed:
                text += f"; first error: {failed[0].message}"
        self.notify(
            text, title=message.request.title, severity="error" if failed else "information"
        )
        self.poll()
        if "actions" in self.views:
            self.load_action_log()

    def on_purge_requested(self, message: PurgeRequested) -> None:
        message.stop()
        if not self.read_only:
            self.count_queue(message.queue, message.unacked)

    @work(thread=True, group="count", exit_on_error=False)
    def count_queue(self, queue: str, unacked: int) -> None:
        """Count a queue's ready messages for the purge confirmation."""
        try:
            count = self.bridge.queue_length(queue)
        except Exception as exc:
            self.post_message(QueueCounted(queue, None, unacked, f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(QueueCounted(queue, count, unacked))

    def on_queue_counted(self, message: QueueCounted) -> None:
        if message.count is None:
            self.notify(f"Cannot count {message.queue}: {message.error}", severity="error")
            return
        self.confirm_and_run(purge_request(message.queue, message.count, message.unacked))

    # -- action log --------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="action-log", exit_on_error=False)
    def load_action_log(self) -> None:
        """Read the runtime's action log in a thread."""
        try:
            entries = self.bridge.action_log()
        except Exception:
            log.warning("could not read the action log", exc_info=True)
            return
        self.post_message(ActionLogReady(tuple(entries)))

    def on_action_log_ready(self, message: ActionLogReady) -> None:
        view = self.views.get("actions")
        if isinstance(view, ActionLogScreen):
            view.show_action_log(message.entries)

    # -- save --------------------------------------------------------------------------------

    def on_save_requested(self, message: SaveRequested) -> None:
        message.stop()
        moment = self.latest.taken_at if self.latest else time.time()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(moment))
        default = str(self.export_dir / f"tq-{message.view}-{stamp}.csv")

        def chosen(path: str | None) -> None:
            if path:
                self.save_table(path, message.headers, message.rows)

        self.push_screen(SaveScreen(default, len(message.rows)), chosen)

    @work(thread=True, group="save", exit_on_error=False)
    def save_table(
        self, path: str, headers: tuple[str, ...], rows: tuple[tuple[str, ...], ...]
    ) -> None:
        """Write the table to ``path`` (JSON if it ends in .json, else CSV) in a thread."""
        target = Path(path).expanduser()
        as_json = target.suffix.lower() == ".json"
        text = fmt.table_json(headers, rows) if as_json else fmt.table_csv(headers, rows)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        except OSError as exc:
            self.post_message(TableSaved(str(target), 0, f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(TableSaved(str(target.resolve()), len(rows)))

    def on_table_saved(self, message: TableSaved) -> None:
        if message.error:
            self.notify(f"Could not save {message.path}: {message.error}", severity="error")
        else:
            self.notify(f"Saved {message.rows} rows to {message.path}", title="Saved")

    # -- quit --------------------------------------------------------------------------------

    def action_quit_warm(self) -> None:
        """Stop the embedded runtime (warm shutdown) on screen, then exit."""
        if self.stopping:
            return
        self.stopping = True
        hostname = self.latest.hostname if self.latest else "the worker"
        self.push_screen(ShutdownScreen(hostname, self.shutdown_timeout))
        self.stop_runtime()

    def action_shutdown(self) -> None:
        self.action_quit_warm()

    @work(thread=True, group="stop", exit_on_error=False)
    def stop_runtime(self) -> None:
        """Call ``bridge.stop`` in a thread and post how it went."""
        try:
            result = self.bridge.stop(self.shutdown_timeout)
        except Exception as exc:
            log.warning("stop failed", exc_info=True)
            result = CommandResult(ok=False, message=f"{type(exc).__name__}: {exc}")
        self.post_message(RuntimeStopped(result))

    def on_runtime_stopped(self, message: RuntimeStopped) -> None:
        screen = self.screen
        if isinstance(screen, ShutdownScreen):
            screen.show_text(self.latest, done=message.result.message)
        self.set_timer(EXIT_DELAY_S, partial(self.exit, None, 0 if message.result.ok else 1))

    def action_force_quit(self) -> None:
        """Quit at once, without waiting for the runtime to stop."""
        self.exit(None, 1)
