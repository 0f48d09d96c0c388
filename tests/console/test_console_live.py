"""Live behaviour: filter, sort, jump, help, detail, save, pause, failure banner, warm shutdown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from driving import SIZE, column, make_app, press, refresh, row_keys, settle, table
from recorded import FAILED_TASK_ID, TRACEBACK
from textual.widgets import Input, Static

from tq_console.screens.help import HelpScreen
from tq_console.screens.save import SaveScreen
from tq_console.screens.shutdown import ShutdownScreen
from tq_console.screens.task_detail import TaskDetailScreen
from tq_console.widgets.failure_banner import FailureBanner
from tq_console.widgets.status_bar import StatusBar

pytestmark = pytest.mark.console


async def test_filter_narrows_rows_and_escape_restores_them() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "4", "slash")
        assert app.screen.query_one("#prompt", Input).has_focus
        await pilot.press(*"resize")
        await press(pilot, "enter")
        assert column(pilot, "name") == ["images.resize"] * 4
        assert "filter /resize" in str(app.screen.query_one("#body").border_subtitle)
        assert table(pilot).has_focus
        await press(pilot, "escape")
        assert table(pilot).row_count == 15


async def test_filter_survives_new_snapshots() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "2", "slash", "e", "m", "enter")
        assert row_keys(pilot) == ["emails"]
        await refresh(pilot)
        assert row_keys(pilot) == ["emails"]


async def test_shift_letter_sorts_and_toggles_direction() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "2", "R")
        assert row_keys(pilot) == ["critical", "reports", "emails", "default", "low"]
        assert "sort ready ▲" in str(app.screen.query_one("#body").border_subtitle)
        await press(pilot, "R")
        assert row_keys(pilot) == ["low", "default", "emails", "reports", "critical"]
        await press(pilot, "R")
        assert row_keys(pilot) == ["default", "emails", "reports", "low", "critical"]
        await press(pilot, "N")
        assert row_keys(pilot) == ["critical", "default", "emails", "low", "reports"]


async def test_colon_jumps_to_a_view_by_name() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "colon")
        await pilot.press(*"dead")
        await press(pilot, "enter")
        assert app.current_mode == "dead"
        await press(pilot, "colon", "w", "o", "enter")
        assert app.current_mode == "workers"
        await press(pilot, "colon", "n", "o", "p", "e", "enter")
        assert app.current_mode == "workers"


async def test_question_mark_lists_the_view_keys() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "2", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        sections = dict(app.screen.sections)
        assert ("x", "Purge") in sections["Queues"]
        assert ("shift+r", "Sort by ready") in sections["Table"]
        assert ("2", "Queues") in sections["Views"]
        assert ("q", "Quit") in sections["Console"]
        await press(pilot, "escape")
        assert app.current_mode == "queues" and not isinstance(app.screen, HelpScreen)


async def test_enter_opens_the_task_detail_with_its_traceback() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "4")
        tasks = table(pilot)
        tasks.move_cursor(row=tasks.get_row_index(FAILED_TASK_ID))
        await press(pilot, "enter")
        detail = app.screen
        assert isinstance(detail, TaskDetailScreen)
        assert detail.request.task_id == FAILED_TASK_ID
        assert detail.request.traceback == TRACEBACK
        assert detail.query_one("#traceback", Static)
        await press(pilot, "escape")
        assert app.current_mode == "tasks" and not isinstance(app.screen, TaskDetailScreen)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
async def test_ctrl_s_saves_the_visible_rows(tmp_path: Path, suffix: str) -> None:
    app, _ = make_app(export_dir=str(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "2", "ctrl+s")
        assert isinstance(app.screen, SaveScreen)
        path = app.screen.query_one("#path", Input)
        assert path.value == str(tmp_path / "tq-queues-20260101-093008.csv")
        path.value = str(tmp_path / f"queues{suffix}")
        await press(pilot, "enter")
        saved = tmp_path / f"queues{suffix}"
        text = saved.read_text()
        if suffix == ".json":
            rows = json.loads(text)
            assert [row["Queue"] for row in rows] == [
                "default",
                "emails",
                "reports",
                "low",
                "critical",
            ]
            assert rows[0]["Ready"] == "1,164"
        else:
            assert text.splitlines()[0].startswith("Queue,State,Ready,P0")
            assert len(text.splitlines()) == 6
        assert any(str(saved) in n.message for n in app._notifications)


async def test_p_pauses_and_resumes_live_updates() -> None:
    app, bridge = make_app(interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "p")
        assert not app.live
        assert "PAUSED" in str(app.screen.query_one(StatusBar).render())
        polls = bridge.polls
        await pilot.pause(0.3)
        assert bridge.polls == polls
        await press(pilot, "p")
        await pilot.pause(0.3)
        assert bridge.polls > polls
        assert "live" in str(app.screen.query_one(StatusBar).render())


async def test_runtime_failure_shows_a_banner_and_recovery_clears_it() -> None:
    app, bridge = make_app(interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "2")
        bridge.fail(ConnectionError("Error 111 connecting to localhost:6379"))
        polls = bridge.polls
        await pilot.pause(0.5)  # retries after 0.05, 0.1, 0.2 s...
        await settle(pilot)
        banner = app.screen.query_one(FailureBanner)
        assert banner.has_class("-failed")
        assert "Error 111" in str(banner.render())
        assert bridge.polls > polls + 1, "it keeps retrying"
        assert table(pilot).row_count == 5, "the last snapshot stays on screen"
        bridge.fail(None)
        await pilot.pause(app.status.retry_s + 0.3)
        await settle(pilot)
        assert not banner.has_class("-failed")
        assert any("reachable again" in n.message for n in app._notifications)


async def test_q_stops_the_runtime_warmly_on_screen_then_exits() -> None:
    app, bridge = make_app()
    bridge.command_delay = 0.3
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause(0.1)
        assert isinstance(app.screen, ShutdownScreen)
        assert "Stopping tq@worker-1" in str(
            app.screen.query_one("#shutdown-text", Static).render()
        )
        await settle(pilot)
        await pilot.pause(0.6)
    assert bridge.called("stop") == [(5.0,)]
    assert app.return_code == 0
