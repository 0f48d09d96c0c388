"""End to end: the console on an embedded Runtime against the real test Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from driving import OPERATOR, SIZE, press, settle, table
from textual.pilot import Pilot

from tq import App
from tq.worker.runtime import Runtime
from tq_console.app import EXIT_DELAY_S, ConsoleApp
from tq_console.bridge import RuntimeBridge
from tq_console.widgets.status_bar import StatusBar

pytestmark = [pytest.mark.console, pytest.mark.redis]


async def _until(pilot: Pilot[None], predicate: Callable[[], Any], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.1)


async def test_console_follows_an_embedded_runtime_and_acts_on_it(
    app: App, runtime: Callable[..., Runtime]
) -> None:
    rt = runtime()
    console = ConsoleApp(RuntimeBridge(rt), interval=0.2, operator=OPERATOR, shutdown_timeout=5.0)
    queue = app.conf.task_default_queue
    async with console.run_test(size=SIZE) as pilot:
        await _until(pilot, lambda: console.latest is not None)
        assert rt.hostname in str(console.screen.query_one(StatusBar).render())

        failed: Any = app.send_task("tests.fail", args=("boom from the console test",))
        await press(pilot, "4")
        await _until(pilot, lambda: failed.id in table(pilot).rows)
        await _until(pilot, lambda: "failure" in table(pilot).get_cell(failed.id, "state").plain)
        tasks = table(pilot)
        tasks.move_cursor(row=tasks.get_row_index(failed.id))
        await press(pilot, "r", "y")
        await _until(pilot, lambda: any("re-sent" in n.message for n in console._notifications))

        await press(pilot, "2")
        await _until(pilot, lambda: queue in table(pilot).rows)
        table(pilot).move_cursor(row=table(pilot).get_row_index(queue))
        await press(pilot, "s", "y")
        await _until(pilot, lambda: queue in rt.paused)
        await _until(pilot, lambda: "paused" in table(pilot).get_cell(queue, "state").plain)
        await press(pilot, "s", "y")
        await _until(pilot, lambda: queue not in rt.paused)

        await press(pilot, "a")
        await _until(pilot, lambda: table(pilot).row_count >= 3)
        assert set(c.plain for c in table(pilot).get_column("who")) == {OPERATOR}

        await pilot.press("q")
        await settle(pilot)
        await _until(pilot, lambda: rt.state == "stopped")
        await pilot.pause(EXIT_DELAY_S + 0.5)  # the "stopped" message stays up briefly
    assert console.return_code == 0
