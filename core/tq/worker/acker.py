"""Acknowledgements and small results off the controller's loop: a thread that writes
queued results (one pipeline of store scripts per batch) and then sends queued acks (one
``MULTI ZREM … HDEL … EXEC`` per batch), so the loop never waits on a round trip. Results go
before acks queued after them, so a late ack never precedes its task's result. Anything that
fails is kept and retried, by task id and delivery tag, until it goes through.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from tq import faults
from tq.backend.redis import RedisBackend
from tq.exceptions import BackendError, TransportError
from tq.transport.redis import RedisTransport

logger = logging.getLogger(__name__)

#: Most tags per ack transaction.
BATCH_MAX = 512
#: Wait between retries of a failed ack batch (seconds).
RETRY_WAIT_S = 0.5


class Acker:
    def __init__(self, transport: RedisTransport, backend: RedisBackend | None = None) -> None:
        self.transport = transport
        self.backend = backend
        self._pending: list[str] = []
        self._results: list[tuple[str, str]] = []
        self._cond = threading.Condition()
        self._stop = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="tq-acker", daemon=True)
        self.failed_batches = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, results: list[tuple[str, str]], tags: list[str]) -> None:
        """Queue results (written first) and acks in one hand-off (one wake-up)."""
        with self._cond:
            self._results.extend(results)
            self._pending.extend(tags)
            if not self._busy:  # a busy writer looks again before it waits
                self._cond.notify()

    def ack(self, tags: Iterable[str]) -> None:
        with self._cond:
            self._pending.extend(tags)
            self._cond.notify()

    def store(self, task_id: str, meta_text: str) -> None:
        """Queue a result meta (already JSON) for the batched writer."""
        with self._cond:
            self._results.append((task_id, meta_text))
            self._cond.notify()

    def _run(self) -> None:
        warned = False
        while True:
            with self._cond:
                while not self._pending and not self._results and not self._stop:
                    self._cond.wait()
                if not self._pending and not self._results and self._stop:
                    return
                results = self._results[:BATCH_MAX]
                del self._results[:BATCH_MAX]
                batch = self._pending[:BATCH_MAX] if not self._results else []
                del self._pending[: len(batch)]
                self._busy = True
            try:
                if results:
                    self._write(results)
                    results = []
                if batch:
                    faults.hit("before_ack")
                    self.transport.ack(batch)
                if warned:
                    logger.warning("Acks and results are going through again")
                    warned = False
            except (TransportError, BackendError) as exc:
                self.failed_batches += 1
                if not warned:
                    logger.error(
                        "Couldn't write %d result(s) / ack %d message(s): %s; retrying",
                        len(results),
                        len(batch),
                        exc,
                    )
                    warned = True
                with self._cond:
                    self._results[:0] = results
                    self._pending[:0] = batch
                    self._cond.wait(RETRY_WAIT_S)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, results: list[tuple[str, str]]) -> None:
        backend = self.backend
        if backend is None:
            return
        backend.store_many(results)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued was sent (True) or ``timeout`` passed (False)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._pending and not self._results and not self._busy, timeout
            )

    def stop(self, timeout: float = 10.0) -> None:
        self.drain(timeout)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)
