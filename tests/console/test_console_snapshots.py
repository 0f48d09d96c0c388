"""Snapshot tests: every view and the main modals, rendered at a fixed size against baselines.

Baselines live in ``__snapshots__/``; regenerate them deliberately with ``--snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from driving import settle
from recorded import FAILED_TASK_ID
from snapshot_app import TERMINAL_SIZE
from textual.pilot import Pilot

from tq_console.widgets.keyed_table import KeyedTable

pytestmark = pytest.mark.console

APP = "snapshot_app.py"
Compare = Callable[..., bool]


async def _ready(pilot: Pilot[Any]) -> None:
    await settle(pilot)


@pytest.mark.parametrize(
    ("key", "view"),
    [
        ("1", "overview"),
        ("2", "queues"),
        ("3", "unacked"),
        ("4", "tasks"),
        ("5", "pool"),
        ("6", "timers"),
        ("7", "buckets"),
        ("8", "workers"),
        ("9", "dead"),
        ("0", "events"),
        ("b", "beat"),
        ("a", "actions"),
    ],
)
def test_view(snap_compare: Compare, key: str, view: str) -> None:
    assert snap_compare(APP, press=[key], terminal_size=TERMINAL_SIZE, run_before=_ready)


def test_purge_confirmation(snap_compare: Compare) -> None:
    assert snap_compare(
        APP, press=["2", "x", "wait:300", "d", "e"], terminal_size=TERMINAL_SIZE, run_before=_ready
    )


def test_task_detail_with_traceback(snap_compare: Compare) -> None:
    async def open_failure(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        table = pilot.app.screen.query_one(KeyedTable)
        table.move_cursor(row=table.get_row_index(FAILED_TASK_ID))
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(APP, terminal_size=TERMINAL_SIZE, run_before=open_failure)


def test_help(snap_compare: Compare) -> None:
    assert snap_compare(
        APP, press=["2", "question_mark"], terminal_size=TERMINAL_SIZE, run_before=_ready
    )


def test_filtered_and_sorted_tasks(snap_compare: Compare) -> None:
    keys = ["4", "slash", *"image", "enter", "R"]
    assert snap_compare(APP, press=keys, terminal_size=TERMINAL_SIZE, run_before=_ready)


def test_failure_banner(snap_compare: Compare) -> None:
    async def break_redis(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        app: Any = pilot.app
        app.bridge.fail(
            ConnectionError("Error 111 connecting to localhost:6379. Connection refused.")
        )
        app.poll()
        await settle(pilot)
        app._poll_timer.stop()  # hold the attempt count still for the picture

    assert snap_compare(APP, press=["2"], terminal_size=TERMINAL_SIZE, run_before=break_redis)


def test_read_only_footer_has_no_actions(snap_compare: Compare) -> None:
    assert snap_compare(
        f"{APP}:read_only_app", press=["2"], terminal_size=TERMINAL_SIZE, run_before=_ready
    )
