"""Fixtures for the console tier: importable packages, a frozen clock zone, no cursor blink.

Console tests need no Redis: they drive ``ConsoleApp`` with a ``ReplayBridge`` playing the
snapshots of ``recorded.py``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
try:
    import tq_console  # noqa: F401
except ImportError:  # not installed (pip install -e .): use the source folders
    sys.path[:0] = [str(_ROOT / "core"), str(_ROOT / "console")]


@pytest.fixture(autouse=True)
def _utc_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Render wall-clock times in UTC so snapshots match on every machine."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(autouse=True)
def _no_cursor_blink(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the input cursor steady so screenshots are deterministic."""
    from textual.widgets import Input

    monkeypatch.setattr(Input, "_toggle_cursor", lambda self: None)
