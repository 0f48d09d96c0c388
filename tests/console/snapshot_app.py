"""The console on the last recorded snapshot: what snapshot tests and screenshots render.

``snap_compare("snapshot_app.py", ...)`` runs this file and takes ``app``. The bridge replays one
snapshot forever, so every poll shows the same state and renders are deterministic.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parents[1]
for folder in (_HERE, _ROOT / "core", _ROOT / "console"):  # when run outside pytest
    if str(folder) not in sys.path:
        sys.path.append(str(folder))

from recorded import recorded_snapshot  # noqa: E402

from tq_console.app import ConsoleApp  # noqa: E402
from tq_console.bridge import ReplayBridge  # noqa: E402

#: The terminal size of every snapshot test and screenshot.
TERMINAL_SIZE = (120, 36)


def build_app(*, read_only: bool = False) -> ConsoleApp:
    """A console replaying the last recorded snapshot."""
    bridge = ReplayBridge([recorded_snapshot(4)])
    return ConsoleApp(
        bridge, read_only=read_only, interval=2.0, operator="ops@console", shutdown_timeout=30.0
    )


app = build_app()
read_only_app = build_app(read_only=True)
