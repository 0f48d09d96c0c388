"""The console's messages and the plain command requests they carry.

Messages are dataclasses (Toolong's habit): facts in the past tense (``SnapshotReady``,
``CommandFinished``, ``RuntimeFailed``) posted by thread workers, and explicit requests
(``CommandRequested``, ``PurgeRequested``) posted by screens for the app to confirm and run.
Snapshot messages ``can_replace`` older ones of their kind, so a burst collapses into the latest.

This module may import only ``tq.worker.snapshot`` from tq, and Textual's message base.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from tq.worker.snapshot import CommandResult, Snapshot


@dataclass(frozen=True, slots=True)
class Call:
    """One bridge command and its arguments: ``Call("revoke", ("a1b2",), {"terminate": True})``."""

    command: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """``revoke('a1b2', terminate=True)``: the call as the action log records it."""
        parts = [repr(arg) for arg in self.args]
        parts += [f"{name}={value!r}" for name, value in self.kwargs.items()]
        return f"{self.command}({', '.join(parts)})"


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """What an action will do, in words, and the calls that do it.

    Attributes:
        title: The confirmation modal's title, e.g. ``"Purge queue"``.
        summary: Exactly what will happen, in a sentence or two.
        calls: The bridge calls, run in order in one thread worker.
        items: The rows affected, one line each (shown as a list for bulk actions).
        typed: When set, the user must type this word to confirm.
        danger: Style the confirmation as destructive.
        confirm: Ask in a confirmation modal first; False when the screen that built the
            request already showed exactly what will happen (the rate-limit input).
    """

    title: str
    summary: str
    calls: tuple[Call, ...]
    items: tuple[str, ...] = ()
    typed: str | None = None
    danger: bool = False
    confirm: bool = True


@dataclass
class SnapshotReady(Message):
    """A fresh snapshot was taken."""

    snapshot: Snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotReady)


@dataclass
class RuntimeFailed(Message):
    """Taking a snapshot raised (e.g. Redis is down); the poller keeps retrying."""

    error: str

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RuntimeFailed)


@dataclass
class CommandRequested(Message):
    """A screen asks for a command to be confirmed and run."""

    request: CommandRequest


@dataclass
class PurgeRequested(Message):
    """A screen asks to purge a queue; the app counts its messages before confirming."""

    queue: str
    unacked: int = 0


@dataclass
class QueueCounted(Message):
    """The ready-message count of a queue to be purged, or the error that stopped counting."""

    queue: str
    count: int | None
    unacked: int = 0
    error: str | None = None


@dataclass
class CommandFinished(Message):
    """Every call of a request ran; one result per call, in order."""

    request: CommandRequest
    results: tuple[CommandResult, ...]

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)


@dataclass
class ActionLogReady(Message):
    """The runtime's action log was read."""

    entries: tuple[dict[str, Any], ...]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ActionLogReady)


@dataclass
class SaveRequested(Message):
    """A screen asks to save its table; the app asks for a file name, then writes it."""

    view: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass
class TableSaved(Message):
    """A table was written to ``path`` (or failed with ``error``)."""

    path: str
    rows: int
    error: str | None = None


@dataclass
class RuntimeStopped(Message):
    """The warm shutdown finished (or failed); the app exits next."""

    result: CommandResult
