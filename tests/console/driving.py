"""Helpers that drive a ``ConsoleApp`` under Pilot: build it on a ReplayBridge and let it settle."""

from __future__ import annotations

from collections.abc import Sequence

from recorded import recorded_snapshots
from textual.pilot import Pilot

from tq.worker.snapshot import Snapshot
from tq_console.app import ConsoleApp
from tq_console.bridge import ReplayBridge
from tq_console.widgets.keyed_table import KeyedTable

#: The terminal size every Pilot test uses.
SIZE = (120, 36)
#: Who the action log names in tests.
OPERATOR = "ops@console"


def make_app(
    snapshots: Sequence[Snapshot] | None = None,
    *,
    read_only: bool = False,
    interval: float = 3600.0,
    export_dir: str = ".",
) -> tuple[ConsoleApp, ReplayBridge]:
    """A console on a ReplayBridge of the recorded snapshots (the last one by default).

    The long default interval means the app polls once on mount and then only when a test asks.
    """
    bridge = ReplayBridge(list(snapshots) if snapshots is not None else recorded_snapshots()[-1:])
    app = ConsoleApp(
        bridge,
        read_only=read_only,
        interval=interval,
        operator=OPERATOR,
        export_dir=export_dir,
        shutdown_timeout=5.0,
    )
    return app, bridge


async def settle(pilot: Pilot[None]) -> None:
    """Wait for every worker to finish and every posted message to be handled."""
    for _ in range(2):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def press(pilot: Pilot[None], *keys: str) -> None:
    """Press ``keys`` one by one, settling after each."""
    for key in keys:
        await pilot.press(key)
        await settle(pilot)


async def refresh(pilot: Pilot[None]) -> None:
    """Take the next snapshot now and wait until it is shown."""
    await press(pilot, "ctrl+r")


def table(pilot: Pilot[None]) -> KeyedTable:
    """The current view's main table."""
    return pilot.app.screen.query_one(KeyedTable)


def row_keys(pilot: Pilot[None]) -> list[str]:
    """The current table's row keys in display order."""
    return [str(row.key.value) for row in table(pilot).ordered_rows]


def column(pilot: Pilot[None], key: str) -> list[str]:
    """The plain text of column ``key`` of the current table, in display order."""
    current = table(pilot)
    return [current.get_cell(row.key, key).plain for row in current.ordered_rows]
