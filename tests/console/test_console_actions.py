"""Each action calls the right bridge command after its confirmation, and only then.

Cancelling a confirmation calls nothing; every command's result is notified and recorded in
the action log; read-only mode unbinds every key that changes the worker.
"""

from __future__ import annotations

import pytest
from driving import OPERATOR, SIZE, make_app, press, settle, table
from recorded import FAILED_TASK_ID, task_id
from textual.binding import Binding
from textual.pilot import Pilot
from textual.widgets import Button, Input

from tq.worker.snapshot import CommandResult
from tq_console.screens.base import ViewScreen
from tq_console.screens.confirm import ConfirmScreen
from tq_console.screens.rate_limit import RateLimitScreen

pytestmark = pytest.mark.console


def _confirm(pilot: Pilot[None]) -> ConfirmScreen:
    screen = pilot.app.screen
    assert isinstance(screen, ConfirmScreen), f"expected a confirmation, got {screen!r}"
    return screen


async def _type(pilot: Pilot[None], text: str) -> None:
    await pilot.press(*text)
    await settle(pilot)


async def test_purge_asks_to_type_the_queue_name_and_shows_the_count() -> None:
    app, bridge = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "2", "x")
        confirm = _confirm(pilot)
        assert confirm.request.typed == "default"
        assert "1,164 ready messages" in confirm.request.summary
        assert "4 unacked messages" in confirm.request.summary
        assert confirm.query_one("#confirm", Button).disabled
        await _type(pilot, "defaul")
        await press(pilot, "enter")  # not yet: the name is incomplete
        assert isinstance(app.screen, ConfirmScreen) and bridge.called("purge") == []
        await _type(pilot, "t")
        assert not confirm.query_one("#confirm", Button).disabled
        await press(pilot, "enter")
        assert bridge.called("purge") == [("default",)]
        assert isinstance(app.screen, ViewScreen)
        assert table(pilot).get_cell("default", "ready").plain == "0"
        assert bridge.action_log()[-1]["who"] == OPERATOR
        assert bridge.action_log()[-1]["what"] == "purge('default')"
        assert bridge.action_log()[-1]["outcome"].startswith("ok: Purged 1164")
        assert any("Purged 1164" in n.message for n in app._notifications)


@pytest.mark.parametrize(
    ("keys", "cancel"),
    [
        (("2", "x"), "escape"),
        (("2", "s"), "n"),
        (("4", "k"), "escape"),
        (("4", "ctrl+k"), "escape"),
        (("4", "r"), "escape"),
        (("5", "plus"), "escape"),
        (("5", "minus"), "n"),
        (("9", "r"), "escape"),
        (("9", "d"), "escape"),
        (("b", "t"), "escape"),
        (("7", "l"), "escape"),
    ],
)
async def test_cancelling_a_confirmation_calls_nothing(keys: tuple[str, ...], cancel: str) -> None:
    app, bridge = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, *keys)
        assert isinstance(app.screen, (ConfirmScreen, RateLimitScreen))
        await press(pilot, cancel)
        assert isinstance(app.screen, ViewScreen)
        assert bridge.calls == []
        assert bridge.action_log() == []


async def test_cancel_button_calls_nothing() -> None:
    app, bridge = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "4", "k")
        await pilot.click("#cancel")
        await settle(pilot)
        assert bridge.calls == []


@pytest.mark.parametrize(
    ("keys", "command", "args"),
    [
        (("2", "s", "y"), "pause_queue", ("default",)),
        (("2", "down", "down", "down", "s", "y"), "resume_queue", ("low",)),
        (("4", "k", "y"), "revoke", (task_id(1), False, "SIGTERM")),
        (("4", "r", "enter"), "retry", (task_id(1),)),
        (("5", "plus", "y"), "grow", (1,)),
        (("5", "minus", "enter"), "shrink", (1,)),
        (("1", "plus", "y"), "grow", (1,)),
        (("9", "r", "y"), "requeue_dead", ("dl-0004",)),
        (("b", "t", "y"), "trigger_beat", ("heartbeat-ping",)),
    ],
)
async def test_confirmed_action_calls_the_bridge_command(
    keys: tuple[str, ...], command: str, args: tuple[object, ...]
) -> None:
    app, bridge = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, *keys)
        assert bridge.calls == [(command, args)]
        entry = bridge.action_log()[-1]
        assert entry["who"] == OPERATOR and entry["what"].startswith(f"{command}(")
        assert entry["outcome"].startswith("ok: ")
        assert app._notifications, "the result is notified"


async def test_terminate_needs_the_word_terminate() -> None:
    app, bridge = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "4", "ctrl+k")
        confirm = _confirm(pilot)
        assert confirm.request.danger and confirm.request.typed == "terminate"
        assert "SIGTERM" in confirm.request.summary
        await _type(pilot, "terminate")
        await press(pilot, "enter")
        assert bridge.calls == [("revoke", (task_id(1), True, "SIGTERM"))]


async def test_delete_dead_letter_needs_the_word_delete() -> None:
    app, bridge = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "9", "d")
        assert "cannot be undone" in _confirm(pilot).request.summary
        await press(pilot, "y")  # typed confirmations take y as a letter, not as yes
        assert bridge.calls == [] and isinstance(app.screen, ConfirmScreen)
        await press(pilot, "ctrl+u")
        await _type(pilot, "delete")
        await press(pilot, "enter")
        assert bridge.calls == [("delete_dead", ("dl-0004",))]
        assert table(pilot).row_count == 3


async def test_marked_rows_are_retried_in_bulk() -> None:
    app, bridge = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "4")
        tasks = table(pilot)
        tasks.move_cursor(row=tasks.get_row_index(task_id(11)))
        await press(pilot, "space", "space")
        assert len(tasks.marked) == 2
        await press(pilot, "r")
        confirm = _confirm(pilot)
        assert confirm.request.title == "Retry 2 tasks"
        assert len(confirm.request.items) == 2
        await press(pilot, "y")
        assert [args[0] for _, args in bridge.calls] == [task_id(11), FAILED_TASK_ID]
        assert any("2 of 2 succeeded" in n.message for n in app._notifications)


async def test_marked_dead_letters_are_requeued_in_bulk() -> None:
    app, bridge = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "9", "space", "space", "space", "r", "y")
        assert bridge.called("requeue_dead") == [("dl-0004",), ("dl-0003",), ("dl-0002",)]
        assert table(pilot).row_count == 1
        assert table(pilot).marked == set()


async def test_rate_limit_input_sets_the_typed_rate() -> None:
    app, bridge = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "7", "l")
        screen = app.screen
        assert isinstance(screen, RateLimitScreen)
        rate = screen.query_one("#rate", Input)
        assert rate.value == "10/s"
        await press(pilot, "ctrl+u")
        await _type(pilot, "20/m")
        assert "to 20/m (was 10/s)" in str(screen.query_one("#preview").render())
        await press(pilot, "enter")
        assert bridge.calls == [("set_rate_limit", ("mail.send_welcome", "20/m"))]
        assert table(pilot).get_cell("mail.send_welcome", "rate").plain == "20/m"


async def test_rate_limit_input_refuses_nonsense() -> None:
    app, bridge = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "4", "l")  # from the tasks view: the task type of the cursor row
        assert isinstance(app.screen, RateLimitScreen)
        assert app.screen.task_name == "images.resize"
        await press(pilot, "ctrl+u")
        await _type(pilot, "fast")
        await press(pilot, "enter")
        assert isinstance(app.screen, RateLimitScreen)
        assert bridge.calls == []


async def test_a_failing_command_is_reported_as_an_error() -> None:
    app, bridge = make_app()

    def broken(queue: str) -> CommandResult:
        raise ConnectionError("redis went away")

    bridge.pause_queue = broken  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "2", "s", "y")
        errors = [n for n in app._notifications if n.severity == "error"]
        assert errors and "redis went away" in errors[0].message
        assert bridge.action_log()[-1]["outcome"] == "failed: ConnectionError: redis went away"


MUTATING_KEYS = {
    "overview": ("plus", "minus"),
    "queues": ("x", "s"),
    "tasks": ("k", "ctrl+k", "r", "l"),
    "pool": ("plus", "minus"),
    "buckets": ("l",),
    "dead": ("r", "d"),
    "beat": ("t",),
}
VIEW_KEYS = {
    "overview": "1",
    "queues": "2",
    "tasks": "4",
    "pool": "5",
    "buckets": "7",
    "dead": "9",
    "beat": "b",
}


@pytest.mark.parametrize("view", sorted(MUTATING_KEYS))
async def test_read_only_leaves_mutating_keys_unbound(view: str) -> None:
    app, bridge = make_app(read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, VIEW_KEYS[view])
        screen = app.screen
        assert isinstance(screen, ViewScreen)
        active = screen.active_bindings
        for key in MUTATING_KEYS[view]:
            bound = active.get(key)
            assert bound is None or bound.binding.action not in screen.MUTATING, key
        await press(pilot, *MUTATING_KEYS[view])
        assert app.current_mode == view and not isinstance(app.screen, ConfirmScreen)
        assert bridge.calls == []
        titles = {command.title for command in app.get_system_commands(screen)}
        mutating = {
            f"{screen.TITLE}: {binding.description}"
            for binding in type(screen).BINDINGS
            if isinstance(binding, Binding) and binding.action in screen.MUTATING
        }
        assert mutating and not titles & mutating


async def test_writable_views_bind_their_actions_and_list_them_in_the_palette() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "2")
        assert app.screen.active_bindings["x"].binding.action == "purge"
        titles = [command.title for command in app.get_system_commands(app.screen)]
        assert "Queues: Purge" in titles and "Go to Dead letters" in titles
