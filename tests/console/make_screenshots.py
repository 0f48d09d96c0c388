"""Save an SVG of every console view (and the main modals) into ``screenshots/``.

Run from the repository root::

    .venv/bin/python tests/console/make_screenshots.py [OUTPUT_DIR]

It drives the same app as the snapshot tests (``snapshot_app.py``: the last recorded snapshot,
replayed) with Pilot at 120x36, in UTC, so the pictures match the test baselines.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

os.environ["TZ"] = "UTC"
time.tzset()
_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parents[1] / "core"), str(_HERE.parents[1] / "console")]

from driving import settle  # noqa: E402
from recorded import FAILED_TASK_ID  # noqa: E402
from snapshot_app import TERMINAL_SIZE, build_app  # noqa: E402
from textual.pilot import Pilot  # noqa: E402

from tq_console.widgets.keyed_table import KeyedTable  # noqa: E402

Step = Callable[[Pilot[Any]], Awaitable[None]]

#: (file name, keys to press) for each plain view.
VIEWS = (
    ("01-overview", "1"),
    ("02-queues", "2"),
    ("03-unacked", "3"),
    ("04-tasks", "4"),
    ("05-pool", "5"),
    ("06-timers", "6"),
    ("07-buckets", "7"),
    ("08-workers", "8"),
    ("09-dead-letters", "9"),
    ("10-events", "0"),
    ("11-beat", "b"),
    ("12-action-log", "a"),
)


async def _press(pilot: Pilot[Any], *keys: str) -> None:
    for key in keys:
        await pilot.press(key)
        await settle(pilot)


async def _press_key(pilot: Pilot[Any], key: str) -> None:
    await _press(pilot, key)


async def _task_detail(pilot: Pilot[Any]) -> None:
    await _press(pilot, "4")
    table = pilot.app.screen.query_one(KeyedTable)
    table.move_cursor(row=table.get_row_index(FAILED_TASK_ID))
    await _press(pilot, "enter")


async def _purge(pilot: Pilot[Any]) -> None:
    await _press(pilot, "2", "x", "d", "e", "f")


async def _banner(pilot: Pilot[Any]) -> None:
    app: Any = pilot.app
    await _press(pilot, "2")
    app.bridge.fail(ConnectionError("Error 111 connecting to localhost:6379. Connection refused."))
    app.poll()
    await settle(pilot)
    app._poll_timer.stop()


async def _action_log(pilot: Pilot[Any]) -> None:
    await _press(pilot, "2", "s", "y", "9", "r", "y", "a")


#: (file name, steps) for views in a particular state.
SCENES: tuple[tuple[str, Step], ...] = (
    ("13-task-detail", _task_detail),
    ("14-purge-confirmation", _purge),
    ("15-help", lambda pilot: _press(pilot, "2", "question_mark")),
    ("16-runtime-unreachable", _banner),
    ("17-action-log-after-actions", _action_log),
)


async def shoot(name: str, step: Step, folder: Path) -> Path:
    """Run ``step`` on a fresh app and save the screen as ``folder/name.svg``."""
    app = build_app()
    async with app.run_test(size=TERMINAL_SIZE) as pilot:
        await settle(pilot)
        await step(pilot)
        await pilot.pause(0.2)
        path = folder / f"{name}.svg"
        app.save_screenshot(str(path))
    return path


async def main(folder: Path) -> None:
    logging.getLogger("tq_console").setLevel(logging.ERROR)  # the planted Redis failure
    folder.mkdir(parents=True, exist_ok=True)
    scenes: list[tuple[str, Step]] = [(name, partial(_press_key, key=key)) for name, key in VIEWS]
    for name, step in [*scenes, *SCENES]:
        print(await shoot(name, step, folder))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else _HERE.parents[1] / "screenshots"))
