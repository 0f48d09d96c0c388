"""The one exception tree of tq.

Owns every exception tq raises, plus the task-control exceptions under Celery's names so that
task code written for Celery (``raise Reject(...)``, ``self.retry()``) keeps working. Imports
nothing from the rest of tq.
"""

from __future__ import annotations

from typing import Any


class TqError(Exception):
    """Base class of every error tq raises itself."""


class ConfigurationError(TqError):
    """A setting or an option is wrong; the message says which and why."""


class ProtocolError(TqError):
    """A message could not be built or parsed."""


class DecodeError(ProtocolError):
    """A message body or envelope could not be decoded."""


class ContentDisallowed(ProtocolError):
    """The content type is not in ``accept_content``; refused before any deserializer ran."""


class MessageTooLarge(ProtocolError):
    """A message (or its decompressed body) is larger than the configured limit."""


class TransportError(TqError):
    """The broker could not be reached or refused a command."""


class ConnectionLost(TransportError):
    """The connection to the broker dropped; callers may retry after reconnecting."""


class BackendError(TqError):
    """The result backend failed."""


class TimeoutError(TqError):
    """``AsyncResult.get()`` waited longer than its timeout."""


class NotRegistered(TqError, KeyError):
    """The task name is not registered in this app."""


class ChordError(TqError):
    """A task of a chord header failed, so the body cannot run."""


class SecurityError(TqError):
    """A stored result named something tq refuses to rebuild or run."""


class RemoteError(TqError):
    """A task failed with an exception class tq cannot (or will not) rebuild locally.

    Attributes:
        exc_type: the class name as stored by the worker.
        exc_module: the module name as stored by the worker.
    """

    def __init__(self, exc_type: str, exc_module: str | None, *args: Any) -> None:
        super().__init__(*args)
        self.exc_type = exc_type
        self.exc_module = exc_module

    def __str__(self) -> str:
        inner = ", ".join(repr(a) for a in self.args)
        module = f"{self.exc_module}." if self.exc_module else ""
        return f"{module}{self.exc_type}({inner})"


class Retry(TqError):
    """Raised by ``Task.retry()``: the task will run again.

    Args:
        message: a human-readable reason.
        exc: the exception that caused the retry, if any.
        when: the ETA (datetime) or countdown (seconds) of the next attempt.
    """

    def __init__(
        self, message: str | None = None, exc: BaseException | None = None, when: Any = None
    ) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        super().__init__(message, exc, when)

    def __str__(self) -> str:
        if self.message:
            return self.message
        if self.when is not None:
            return f"Retry in {self.when}" + (f": {self.exc!r}" if self.exc else "")
        return f"Retry: {self.exc!r}" if self.exc else "Retry"


class Reject(TqError):
    """Raised by a task to reject its message, optionally requeueing it."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)


class Ignore(TqError):
    """Raised by a task so that the worker stores no state for it."""


class MaxRetriesExceededError(TqError):
    """``Task.retry()`` was called more often than ``max_retries`` allows."""


class TaskRevokedError(TqError):
    """The task was revoked (or expired, or terminated) and did not complete."""


class TimeLimitExceeded(TqError):
    """The task ran past its hard time limit and its process was killed."""


class SoftTimeLimitExceeded(TqError):
    """Raised inside a task when it passes its soft time limit; the task may catch it."""


class WorkerLostError(TqError):
    """The process running the task died before it could report."""


class InvalidTaskError(ProtocolError):
    """A task message is well formed JSON but not a valid task (bad eta, missing id, ...)."""


# Exception classes a stored result may name that tq rebuilds as themselves even though Celery
# stores them under ``celery.exceptions``.
CELERY_COMPAT_EXCEPTIONS: dict[str, type[BaseException]] = {
    cls.__name__: cls
    for cls in (
        NotRegistered,
        ChordError,
        SecurityError,
        Retry,
        Reject,
        Ignore,
        MaxRetriesExceededError,
        TaskRevokedError,
        TimeLimitExceeded,
        SoftTimeLimitExceeded,
        WorkerLostError,
        TimeoutError,
    )
}
