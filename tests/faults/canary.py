"""A module that must never be imported by a worker or a result reader (RELIABILITY.md S2,
S12): importing it writes the file named by ``FAULT_CANARY`` (when set), so a test can tell."""

from __future__ import annotations

import os

_path = os.environ.get("FAULT_CANARY")
if _path:
    with open(_path, "w", encoding="utf-8") as _out:
        _out.write(f"imported by pid {os.getpid()}\n")


class CanaryError(Exception):
    """An exception class only reachable by importing this module."""


def run(*args: object) -> None:
    """A function only reachable by importing this module."""
