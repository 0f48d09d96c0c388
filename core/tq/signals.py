"""Celery-named signals as plain objects with ``connect`` and ``send``.

A receiver's error is logged with its traceback and never raised into the worker. Nothing here
knows about tasks or Redis.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

Receiver = Callable[..., Any]


class Signal:
    """A named hook that receivers connect to.

    Args:
        name: the Celery name of the signal.
        providing_args: the keyword arguments ``send`` passes (documentation only).
    """

    def __init__(self, name: str, providing_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.providing_args = providing_args
        self._receivers: list[tuple[Receiver, Any]] = []
        self._lock = threading.Lock()

    def connect(self, receiver: Receiver | None = None, sender: Any = None) -> Any:
        """Connect ``receiver``; usable as ``@signal.connect`` or ``@signal.connect(sender=x)``."""
        if receiver is None:

            def decorator(fn: Receiver) -> Receiver:
                self.connect(fn, sender=sender)
                return fn

            return decorator
        with self._lock:
            if not any(r is receiver and s is sender for r, s in self._receivers):
                self._receivers.append((receiver, sender))
        return receiver

    def disconnect(self, receiver: Receiver, sender: Any = None) -> None:
        """Remove ``receiver`` (for ``sender``); unknown receivers are ignored."""
        with self._lock:
            self._receivers = [
                (r, s) for r, s in self._receivers if not (r is receiver and s is sender)
            ]

    @property
    def receivers(self) -> list[Receiver]:
        return [r for r, _ in self._receivers]

    def send(self, sender: Any = None, **named: Any) -> list[tuple[Receiver, Any]]:
        """Call every receiver; returns ``(receiver, return value or exception)`` pairs."""
        if not self._receivers:
            return []
        replies: list[tuple[Receiver, Any]] = []
        for receiver, wanted in list(self._receivers):
            if (
                wanted is not None
                and wanted is not sender
                and wanted != getattr(sender, "name", sender)
            ):
                continue
            try:
                replies.append((receiver, receiver(signal=self, sender=sender, **named)))
            except Exception as exc:
                logger.exception("Signal receiver %r of %s raised", receiver, self.name)
                replies.append((receiver, exc))
        return replies

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"


before_task_publish = Signal("before_task_publish")
after_task_publish = Signal("after_task_publish")
task_received = Signal("task_received")
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_failure = Signal("task_failure")
task_retry = Signal("task_retry")
task_revoked = Signal("task_revoked")
task_unknown = Signal("task_unknown")
task_rejected = Signal("task_rejected")
task_internal_error = Signal("task_internal_error")
worker_init = Signal("worker_init")
worker_process_init = Signal("worker_process_init")
worker_process_shutdown = Signal("worker_process_shutdown")
worker_ready = Signal("worker_ready")
worker_shutdown = Signal("worker_shutdown")
worker_shutting_down = Signal("worker_shutting_down")
beat_init = Signal("beat_init")
beat_embedded_init = Signal("beat_embedded_init")
