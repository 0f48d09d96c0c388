"""``FailureBanner``: a red line saying the runtime cannot be reached and that we keep retrying.

Hidden while snapshots arrive. No I/O.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class FailureBanner(Static):
    """``⚠ Runtime unreachable  ConnectionError: …  — retrying in 4s (attempt 3)``."""

    DEFAULT_CSS = """
    FailureBanner { display: none; }
    FailureBanner.-failed { display: block; }
    """

    def update(self, error: str | None = None, attempt: int = 0, retry_s: float = 0.0) -> None:  # type: ignore[override]
        """Show ``error`` (the ``attempt``-th failure in a row), or hide when it is None."""
        self.set_class(error is not None, "-failed")
        if error is None:
            super().update("")
            return
        text = Text.assemble(
            (" ⚠ Runtime unreachable ", "bold reverse"),
            " ",
            (error, "bold"),
            (f"  — showing the last snapshot; retrying in {retry_s:g}s (attempt {attempt})", ""),
        )
        super().update(text)
