"""The consumer thread: pops from the consumed queues while the controller has prefetch
credit, and hands the deliveries over. Each pop also records the messages in ``unacked`` in
the same atomic step (see ``transport/lua/pop.lua``), so a crash at any instant loses nothing.

When the queues are empty it blocks on the first queue with a non-destructive ``BLMOVE``
peek instead of polling. On a lost connection it backs off (capped) and logs once per outage.

Every pop carries a nonce and is recorded under it by the script. When a pop gets no reply
(the broker froze past ``socket_timeout``, or the connection dropped after the server ran it),
the server may still run it, and its messages would wait in ``unacked`` for the visibility
timeout. So the consumer keeps that nonce and, once the broker answers again, asks for its
result (``RedisTransport.recover_pop``) before popping anything else: the messages that pop
took are delivered, or, if it never ran, nothing is and it never will pop. It asks once more
when it stops, so what it recovers is restored with the rest of the worker's held messages.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

from tq import faults
from tq.exceptions import TransportError
from tq.transport.redis import Delivery, RedisTransport

logger = logging.getLogger(__name__)

#: Most messages taken in one pop script call.
BATCH_MAX = 64
#: Reconnect backoff (seconds): first wait and cap.
BACKOFF_FIRST = 0.2
BACKOFF_CAP = 5.0


class Consumer:
    """Pops for the controller.

    Args:
        transport: a transport of its own (its blocking connection is used here only).
        queues: callable returning the queues to consume now (changes with add/cancel).
        credit: callable returning how many more messages the controller will take.
        deliver: callable receiving each non-empty batch.
        credit_event: set by the controller whenever credit becomes available.
    """

    def __init__(
        self,
        transport: RedisTransport,
        queues: Callable[[], list[str]],
        credit: Callable[[], int],
        deliver: Callable[[list[Delivery]], None],
        credit_event: threading.Event,
        on_connection: Callable[[bool, str | None], None] | None = None,
        limit: Callable[[], int] | None = None,
    ) -> None:
        self.transport = transport
        self.queues = queues
        self.credit = credit
        self.deliver = deliver
        self.credit_event = credit_event
        self.on_connection = on_connection
        self.limit = limit
        self._recent_full = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = True
        #: The nonce of the last pop that got no reply, until its result has been asked for.
        self.unanswered: str | None = None
        #: Messages delivered by asking for unanswered pops (figures, tests).
        self.recovered = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tq-consumer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.credit_event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _run(self) -> None:
        backoff = BACKOFF_FIRST
        while not self._stop.is_set():
            try:
                self._cycle()
                if not self.connected:
                    logger.warning("Connection to broker restored: consuming again")
                    self._set_connected(True, None)
                backoff = BACKOFF_FIRST
            except TransportError as exc:
                if self.connected:
                    logger.error("Connection to broker lost: %s; retrying with backoff", exc)
                    self._set_connected(False, str(exc))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP)
            except Exception:
                logger.exception("Consumer loop error; continuing")
                self._stop.wait(1.0)
        if self.unanswered is not None:
            try:
                self._recover()
            except TransportError as exc:
                logger.warning(
                    "Stopping with a pop whose reply was lost (%s): what it took stays in "
                    "unacked until the visibility timeout",
                    exc,
                )
        self.transport.close()  # its own transport: nothing else uses its connections

    def low_water(self) -> int:
        """Below this much credit a busy consumer waits briefly for more (batching)."""
        return max((self.limit() if self.limit else 2) // 2, 1)

    def _set_connected(self, ok: bool, error: str | None) -> None:
        self.connected = ok
        if self.on_connection is not None:
            self.on_connection(ok, error)

    def _recover(self) -> None:
        """Ask for the result of the pop that got no reply; deliver what it took."""
        nonce = self.unanswered
        assert nonce is not None
        batch = self.transport.recover_pop(nonce)
        self.unanswered = None
        if batch:
            self.recovered += len(batch)
            logger.warning("Recovered %d message(s) from a pop whose reply was lost", len(batch))
            self.deliver(batch)

    def _cycle(self) -> None:
        if self.unanswered is not None:
            self._recover()
        credit = self.credit()
        queues = self.queues()
        wanted = self.low_water() if self._recent_full else 1
        if 0 < credit < wanted:
            # Let credit build up to half the limit so pops come in batches, not one by one.
            self._wait_for_credit(wanted, 0.002)
            credit = self.credit()
        if credit <= 0 or not queues:
            self._wait_for_credit(wanted, 0.5, recheck=True)
            return
        nonce = uuid.uuid4().hex
        try:
            batch = self.transport.pop(queues, min(credit, BATCH_MAX), nonce=nonce)
        except TransportError:
            self.unanswered = nonce  # it may still run (or have run): ask before popping again
            raise
        self._recent_full = len(batch) >= min(credit, BATCH_MAX)
        if batch:
            faults.hit("after_pop")
            self.deliver(batch)
            return
        timeout = (
            self.transport.idle_wait if len(queues) == 1 else min(self.transport.idle_wait, 0.2)
        )
        self.transport.wait(queues, timeout)

    def _wait_for_credit(self, wanted: int, timeout: float, recheck: bool = False) -> None:
        """Sleep until the controller has ``wanted`` credit (it sets the event then) or
        ``timeout`` passes."""
        event = self.credit_event
        event.wanted = wanted  # type: ignore[attr-defined]
        event.clear()
        if recheck and self.credit() > 0 and self.queues():
            return
        event.wait(timeout)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
