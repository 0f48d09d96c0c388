"""Beat embedded in a worker (``-B``): the Beat loop on a thread of the worker process.

Any number of workers may embed beat; beat's leader lock makes exactly one of them send.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from tq.beat import Beat
from tq.worker.snapshot import BeatEntryInfo

logger = logging.getLogger(__name__)


class EmbeddedBeat:
    def __init__(self, app: Any) -> None:
        self.beat = Beat(app)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self.beat.run, args=(self._stop,), name="tq-beat", daemon=True
        )

    def start(self) -> None:
        logger.info("beat: embedded in this worker (%d entries)", len(self.beat.entries))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def entries(self) -> tuple[BeatEntryInfo, ...]:
        return tuple(
            BeatEntryInfo(
                s.name, s.task, s.schedule, s.next_run, s.last_run, s.total_run_count, s.last_result
            )
            for s in self.beat.entries_info()
        )

    def trigger(self, name: str) -> str:
        return self.beat.trigger(name)
