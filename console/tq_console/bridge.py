"""The seam between the console and a worker: the ``Bridge`` protocol and two implementations.

- :class:`RuntimeBridge` wraps an embedded ``tq.worker.runtime.Runtime`` (any object with its
  snapshot and command methods; the runtime is never imported here, so the console can be built
  and tested without it).
- :class:`ReplayBridge` plays recorded snapshots and records the commands it receives, mutating the
  snapshots it plays where the effect is simple (a purge empties the queue). Tests and the
  screenshot script use it, so nothing there needs Redis.

Every method of a bridge may block (Redis I/O): the app calls them only from thread workers.
Only this module (and ``cli.py``) may call into tq runtime objects; it must not import Textual.
"""

from __future__ import annotations

import dataclasses
import getpass
import logging
import socket
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tq.worker.snapshot import CommandResult, Snapshot

if TYPE_CHECKING:
    from tq_console.messages import Call

log = logging.getLogger(__name__)

#: Bridge methods a console request may call (``stop`` and the reads are called directly).
COMMANDS = frozenset(
    {
        "purge", "revoke", "retry", "requeue_dead", "delete_dead", "grow", "shrink",
        "pause_queue", "resume_queue", "set_rate_limit", "trigger_beat",
    }
)  # fmt: skip
#: Most action-log entries a bridge keeps in memory (ReplayBridge, or a runtime without a log).
REPLAY_ACTION_LOG_SIZE = 500


def operator_name() -> str:
    """``user@host``: who the action log names for actions taken from this console."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@runtime_checkable
class Bridge(Protocol):
    """What the console needs from a worker: a snapshot to show and commands to run.

    Commands return a :class:`~tq.worker.snapshot.CommandResult` whose message the UI shows as it
    is. Any method may raise when the worker or Redis is unreachable.
    """

    def snapshot(self) -> Snapshot: ...

    def purge(self, queue: str) -> CommandResult: ...

    def revoke(
        self, task_id: str, terminate: bool = False, signal: str = "SIGTERM"
    ) -> CommandResult: ...

    def retry(self, task_id: str) -> CommandResult: ...

    def requeue_dead(self, entry_id: str) -> CommandResult: ...

    def delete_dead(self, entry_id: str) -> CommandResult: ...

    def grow(self, n: int = 1) -> CommandResult: ...

    def shrink(self, n: int = 1) -> CommandResult: ...

    def pause_queue(self, queue: str) -> CommandResult: ...

    def resume_queue(self, queue: str) -> CommandResult: ...

    def set_rate_limit(self, task_name: str, rate: str) -> CommandResult: ...

    def trigger_beat(self, entry_name: str) -> CommandResult: ...

    def queue_length(self, queue: str) -> int: ...

    def stop(self, timeout: float) -> CommandResult: ...

    def record_action(self, who: str, what: str, outcome: str) -> None: ...

    def action_log(self) -> list[dict[str, Any]]: ...


def run_calls(bridge: Bridge, calls: Sequence[Call], who: str) -> tuple[CommandResult, ...]:
    """Run ``calls`` in order on ``bridge`` and record each in its action log as done by ``who``.

    A call that raises becomes a failed result; it never stops the calls after it. Blocking:
    call this from a thread worker.
    """
    results = []
    for call in calls:
        try:
            if call.command not in COMMANDS:
                raise ValueError(f"unknown command {call.command!r}")
            result = getattr(bridge, call.command)(*call.args, **call.kwargs)
        except Exception as exc:
            log.warning("command %s failed", call.describe(), exc_info=True)
            result = CommandResult(ok=False, message=f"{type(exc).__name__}: {exc}")
        results.append(result)
        outcome = f"{'ok' if result.ok else 'failed'}: {result.message}"
        try:
            bridge.record_action(who, call.describe(), outcome)
        except Exception:
            log.warning("could not record action %s", call.describe(), exc_info=True)
    return tuple(results)


class RuntimeBridge:
    """A :class:`Bridge` over an embedded runtime, delegating each call as it is.

    ``trigger_beat``, ``record_action`` and ``action_log`` are optional on the runtime: without
    them a trigger reports that beat is not embedded and actions are logged in this console only.

    Args:
        runtime: A ``tq.worker.runtime.Runtime`` or anything with the same methods.
    """

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self._local_log: list[dict[str, Any]] = []

    def snapshot(self) -> Snapshot:
        result: Snapshot = self.runtime.snapshot()
        return result

    def purge(self, queue: str) -> CommandResult:
        return self._result(self.runtime.purge(queue))

    def revoke(
        self, task_id: str, terminate: bool = False, signal: str = "SIGTERM"
    ) -> CommandResult:
        return self._result(self.runtime.revoke(task_id, terminate=terminate, signal=signal))

    def retry(self, task_id: str) -> CommandResult:
        return self._result(self.runtime.retry(task_id))

    def requeue_dead(self, entry_id: str) -> CommandResult:
        return self._result(self.runtime.requeue_dead(entry_id))

    def delete_dead(self, entry_id: str) -> CommandResult:
        return self._result(self.runtime.delete_dead(entry_id))

    def grow(self, n: int = 1) -> CommandResult:
        return self._result(self.runtime.grow(n))

    def shrink(self, n: int = 1) -> CommandResult:
        return self._result(self.runtime.shrink(n))

    def pause_queue(self, queue: str) -> CommandResult:
        return self._result(self.runtime.pause_queue(queue))

    def resume_queue(self, queue: str) -> CommandResult:
        return self._result(self.runtime.resume_queue(queue))

    def set_rate_limit(self, task_name: str, rate: str) -> CommandResult:
        return self._result(self.runtime.set_rate_limit(task_name, rate))

    def trigger_beat(self, entry_name: str) -> CommandResult:
        trigger = getattr(self.runtime, "trigger_beat", None)
        if trigger is None:
            return CommandResult(ok=False, message="this worker does not run beat (-B)")
        return self._result(trigger(entry_name))

    def queue_length(self, queue: str) -> int:
        return int(self.runtime.queue_length(queue))

    def stop(self, timeout: float) -> CommandResult:
        result = self.runtime.stop(timeout)
        if isinstance(result, CommandResult):
            return result
        return CommandResult(ok=True, message="Worker stopped")

    def record_action(self, who: str, what: str, outcome: str) -> None:
        record = getattr(self.runtime, "record_action", None)
        if record is None:  # a runtime without an action log: keep this console's own
            self._local_log.append(
                {"time": time.time(), "who": who, "what": what, "outcome": outcome}
            )
            del self._local_log[:-REPLAY_ACTION_LOG_SIZE]
            return
        record(who, what, outcome)

    def action_log(self) -> list[dict[str, Any]]:
        read = getattr(self.runtime, "action_log", None)
        if read is None:
            return list(self._local_log)
        return list(read())

    @staticmethod
    def _result(value: Any) -> CommandResult:
        if isinstance(value, CommandResult):
            return value
        return CommandResult(ok=True, message=str(value))


class ReplayBridge:
    """A :class:`Bridge` that plays recorded snapshots and records the commands it receives.

    Each :meth:`snapshot` call returns the next recorded snapshot (staying on the last one, or
    starting again when ``loop`` is set), with the effects of commands received so far applied:
    purged queues are empty, paused queues are not consumed, revoked tasks are listed as revoked,
    requeued or deleted dead letters are gone, the pool size follows grow and shrink, rate limits
    follow ``set_rate_limit`` and ``stop`` leaves the worker stopped.

    Args:
        snapshots: The recorded snapshots, oldest first (at least one).
        loop: Start again from the first snapshot after the last.
        command_delay: Seconds each command (and ``stop``) sleeps, to show progress on screen.
        now: Time source for action-log entries; defaults to the current snapshot's ``taken_at``.

    Attributes:
        calls: Every command received, as ``(name, args)``, in order.
        actions: Every ``record_action`` entry, oldest first.
        polls: How many times :meth:`snapshot` was called (failed calls included).
    """

    def __init__(
        self,
        snapshots: Sequence[Snapshot],
        *,
        loop: bool = False,
        command_delay: float = 0.0,
        now: Any = None,
    ) -> None:
        if not snapshots:
            raise ValueError("ReplayBridge needs at least one snapshot")
        self.snapshots = list(snapshots)
        self.loop = loop
        self.command_delay = command_delay
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.actions: list[dict[str, Any]] = []
        self.polls = 0
        self._now = now
        self._lock = threading.Lock()
        self._index = 0
        self._current = self.snapshots[0]
        self._failure: Exception | None = None
        self._purged: set[str] = set()
        self._consuming: dict[str, bool] = {}
        self._revoked: list[str] = []
        self._dead_gone: set[str] = set()
        self._pool_deltas: list[int] = []
        self._rates: dict[str, str] = {}
        self._stopped = False

    # -- test controls -------------------------------------------------------------------

    def fail(self, error: Exception | None) -> None:
        """Make every :meth:`snapshot` raise ``error`` until called again with None."""
        with self._lock:
            self._failure = error

    def called(self, name: str) -> list[tuple[Any, ...]]:
        """The arguments of every received call of command ``name``."""
        with self._lock:
            return [args for command, args in self.calls if command == name]

    # -- Bridge ----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            self.polls += 1
            if self._failure is not None:
                raise self._failure
            recorded = self.snapshots[self._index]
            if self._index + 1 < len(self.snapshots):
                self._index += 1
            elif self.loop:
                self._index = 0
            self._current = self._apply(recorded)
            return self._current

    def purge(self, queue: str) -> CommandResult:
        count = self.queue_length(queue)
        self._record("purge", queue, effect=lambda: self._purged.add(queue))
        return CommandResult(ok=True, message=f"Purged {count} messages from {queue}", count=count)

    def revoke(
        self, task_id: str, terminate: bool = False, signal: str = "SIGTERM"
    ) -> CommandResult:
        self._record(
            "revoke", task_id, terminate, signal, effect=lambda: self._revoked.append(task_id)
        )
        verb = f"Terminated ({signal})" if terminate else "Revoked"
        return CommandResult(ok=True, message=f"{verb} task {task_id}", count=1)

    def retry(self, task_id: str) -> CommandResult:
        self._record("retry", task_id)
        return CommandResult(ok=True, message=f"Sent task {task_id} again", count=1)

    def requeue_dead(self, entry_id: str) -> CommandResult:
        self._record("requeue_dead", entry_id, effect=lambda: self._dead_gone.add(entry_id))
        return CommandResult(ok=True, message=f"Requeued dead letter {entry_id}", count=1)

    def delete_dead(self, entry_id: str) -> CommandResult:
        self._record("delete_dead", entry_id, effect=lambda: self._dead_gone.add(entry_id))
        return CommandResult(ok=True, message=f"Deleted dead letter {entry_id}", count=1)

    def grow(self, n: int = 1) -> CommandResult:
        self._record("grow", n, effect=lambda: self._pool_deltas.append(n))
        return CommandResult(ok=True, message=f"Pool grew by {n}", count=n)

    def shrink(self, n: int = 1) -> CommandResult:
        self._record("shrink", n, effect=lambda: self._pool_deltas.append(-n))
        return CommandResult(ok=True, message=f"Pool shrank by {n}", count=n)

    def pause_queue(self, queue: str) -> CommandResult:
        self._record("pause_queue", queue, effect=lambda: self._consuming.update({queue: False}))
        return CommandResult(ok=True, message=f"Stopped consuming from {queue}")

    def resume_queue(self, queue: str) -> CommandResult:
        self._record("resume_queue", queue, effect=lambda: self._consuming.update({queue: True}))
        return CommandResult(ok=True, message=f"Consuming from {queue} again")

    def set_rate_limit(self, task_name: str, rate: str) -> CommandResult:
        self._record(
            "set_rate_limit", task_name, rate, effect=lambda: self._rates.update({task_name: rate})
        )
        shown = rate or "no limit"
        return CommandResult(ok=True, message=f"Rate limit of {task_name} is now {shown}")

    def trigger_beat(self, entry_name: str) -> CommandResult:
        self._record("trigger_beat", entry_name)
        return CommandResult(ok=True, message=f"Sent beat entry {entry_name}", count=1)

    def queue_length(self, queue: str) -> int:
        with self._lock:
            for info in self._current.queues:
                if info.name == queue:
                    return 0 if queue in self._purged else info.ready
        return 0

    def stop(self, timeout: float) -> CommandResult:
        self._record("stop", timeout, effect=lambda: setattr(self, "_stopped", True))
        return CommandResult(ok=True, message="Worker stopped (warm shutdown)")

    def record_action(self, who: str, what: str, outcome: str) -> None:
        with self._lock:
            moment = self._now() if callable(self._now) else self._current.taken_at
            self.actions.append({"time": moment, "who": who, "what": what, "outcome": outcome})
            del self.actions[:-REPLAY_ACTION_LOG_SIZE]

    def action_log(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.actions)

    # -- internals -------------------------------------------------------------------------

    def _record(self, name: str, *args: Any, effect: Any = None) -> None:
        if self.command_delay:
            time.sleep(self.command_delay)
        with self._lock:
            self.calls.append((name, args))
            if effect is not None:
                effect()

    def _apply(self, snap: Snapshot) -> Snapshot:
        """The recorded snapshot with the effects of the commands received so far."""
        paused = {q for q in (*snap.paused_queues, *self._consuming) if not self._consuming.get(q)}
        queues = tuple(
            dataclasses.replace(
                queue,
                lengths=tuple((p, 0) for p, _ in queue.lengths)
                if queue.name in self._purged
                else queue.lengths,
                consuming=queue.name not in paused,
            )
            for queue in snap.queues
        )
        dead = tuple(entry for entry in snap.dead_letters if entry.id not in self._dead_gone)
        buckets = tuple(
            dataclasses.replace(bucket, rate=self._rates.get(bucket.task_name, bucket.rate))
            for bucket in snap.buckets
        )
        revoked = snap.revoked + tuple(t for t in self._revoked if t not in snap.revoked)
        return dataclasses.replace(
            snap,
            queues=queues,
            paused_queues=tuple(sorted(paused)),
            dead_letters=dead,
            dead_letter_count=max(0, snap.dead_letter_count - (len(snap.dead_letters) - len(dead))),
            buckets=buckets,
            revoked=revoked,
            concurrency=max(0, snap.concurrency + sum(self._pool_deltas)),
            state="stopped" if self._stopped else snap.state,
        )
