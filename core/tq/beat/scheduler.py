"""Beat: reads ``beat_schedule``, sends each entry's task when it is due, safe to run twice.

Owns the entries (parsed from Celery's ``beat_schedule`` format), the loop, and the view of them
the console shows (:class:`BeatEntryState`; the worker turns it into its snapshot's
``BeatEntryInfo``). Tasks go out through ``app.send_task`` and nothing else; Redis is reached only
through the client the app hands over (``app.broker_client()``), via ``store.py`` and ``lock.py``.
Must not import ``tq.worker`` or the console.

Each tick, the leader (see ``lock.py``) reads every entry's record, and for each entry with a due
time at or before ``now`` claims it in Redis (``BeatStore.claim``) and sends the task only if the
claim succeeded. Standbys only poll the lock. The catch-up policy (one run for any number of
missed due times) is described in ``store.py``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any, Protocol

import redis

from tq import signals
from tq.beat.lock import LeaderLock
from tq.beat.schedules import Schedule, maybe_schedule, resolve_zone
from tq.beat.store import BeatStore, lock_key
from tq.clock import Clock, SystemClock
from tq.exceptions import ConfigurationError

logger = logging.getLogger(__name__)

# Celery's default for beat_max_loop_interval: the longest beat sleeps between ticks.
DEFAULT_MAX_INTERVAL_S = 300.0
# How long the leader lock outlives a leader that stopped renewing, when neither the constructor
# nor ``beat_lock_timeout`` says; a standby takes over within this (plus one standby poll). The
# leader renews at least three times per TTL.
DEFAULT_LOCK_TTL_S = 10.0
# Fractions of the lock TTL: how often the leader renews, and how often a standby polls.
_RENEW_FRACTION = 1 / 3
_STANDBY_FRACTION = 1 / 4
# The longest single sleep of the run loop, so that a stop request is seen promptly.
_SLEEP_SLICE_S = 0.1
# Back-off after a failed tick (Redis down, ...), doubling up to the cap.
_ERROR_BACKOFF_S = 0.5
_ERROR_BACKOFF_CAP_S = 10.0

_ENTRY_KEYS = frozenset({"task", "schedule", "args", "kwargs", "options", "relative"})


class BeatConf(Protocol):
    """The settings beat reads from ``app.conf``."""

    @property
    def beat_schedule(self) -> Mapping[str, Mapping[str, Any]]: ...
    @property
    def timezone(self) -> str | tzinfo | None: ...
    @property
    def enable_utc(self) -> bool: ...
    @property
    def beat_max_loop_interval(self) -> float | None: ...
    @property
    def broker_transport_options(self) -> Mapping[str, Any]: ...


class BeatApp(Protocol):
    """What beat needs from the App: settings, a broker client, and ``send_task``."""

    @property
    def conf(self) -> BeatConf: ...
    def broker_client(self) -> redis.Redis: ...
    def send_task(self, name: str, *, args: Any = ..., kwargs: Any = ..., **options: Any) -> Any:
        """Send task ``name``; returns an AsyncResult-like object with an ``id``."""
        ...


@dataclass(frozen=True, slots=True)
class Entry:
    """One parsed ``beat_schedule`` entry, its schedule bound to the app's zone."""

    name: str
    task: str
    schedule: Schedule
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    options: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class BeatEntryState:
    """One entry as the console shows it (field for field ``tq.worker.snapshot.BeatEntryInfo``)."""

    name: str
    task: str
    schedule: str
    next_run: float | None
    last_run: float | None
    total_run_count: int
    last_result: str | None = None


def parse_entry(name: str, spec: Mapping[str, Any], zone: tzinfo) -> Entry:
    """Read one ``beat_schedule`` entry in Celery's format.

    Raises:
        ConfigurationError: a key is unknown or missing, or a value has the wrong type.
    """
    where = f"beat_schedule[{name!r}]"
    if not isinstance(spec, Mapping):
        raise ConfigurationError(f"{where}: expected a dict, got {type(spec).__name__}")
    unknown = set(spec) - _ENTRY_KEYS
    if unknown:
        raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)}")
    task = spec.get("task")
    if not isinstance(task, str) or not task:
        raise ConfigurationError(f"{where}: 'task' must be a task name")
    if "schedule" not in spec:
        raise ConfigurationError(f"{where}: 'schedule' is missing")
    args, kwargs, options = spec.get("args", ()), spec.get("kwargs", {}), spec.get("options", {})
    if not isinstance(args, list | tuple):
        raise ConfigurationError(f"{where}: 'args' must be a list or tuple")
    for key, value in (("kwargs", kwargs), ("options", options)):
        if not isinstance(value, Mapping):
            raise ConfigurationError(f"{where}: {key!r} must be a dict")
    try:
        sched = maybe_schedule(spec["schedule"], relative=bool(spec.get("relative", False)))
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from exc
    return Entry(name, task, sched.with_zone(zone), tuple(args), dict(kwargs), dict(options))


class Beat:
    """Sends the app's periodic tasks; any number may run, one leads and sends.

    Args:
        app: the App (``conf``, ``broker_client()``, ``send_task``).
        clock: wall and monotonic time, and sleeping; the system clock by default.
        max_interval: the longest sleep between ticks in seconds; ``beat_max_loop_interval``
            (or 300 s, Celery's default) when omitted.
        lock_ttl_s: how long the leader lock outlives a dead leader; the ``beat_lock_timeout``
            setting (or 10 s) when omitted.

    Raises:
        ConfigurationError: ``beat_schedule`` or ``timezone`` is invalid.
    """

    def __init__(
        self,
        app: BeatApp,
        clock: Clock | None = None,
        max_interval: float | None = None,
        lock_ttl_s: float | None = None,
    ) -> None:
        conf = app.conf
        self._app = app
        self._clock = clock if clock is not None else SystemClock()
        zone = resolve_zone(conf.timezone, conf.enable_utc)
        schedule = conf.beat_schedule or {}
        self._entries = tuple(parse_entry(name, spec, zone) for name, spec in schedule.items())
        configured = max_interval if max_interval is not None else conf.beat_max_loop_interval
        self._max_interval_s = float(configured or DEFAULT_MAX_INTERVAL_S)
        if self._max_interval_s <= 0:
            raise ConfigurationError("beat max interval must be more than 0 seconds")
        client = app.broker_client()
        prefix = str((conf.broker_transport_options or {}).get("global_keyprefix", "") or "")
        self._store = BeatStore(client, prefix)
        if lock_ttl_s is None:
            lock_ttl_s = float(getattr(conf, "beat_lock_timeout", None) or DEFAULT_LOCK_TTL_S)
        self._lock = LeaderLock(client, lock_key(prefix), lock_ttl_s, self._clock)

    @property
    def entries(self) -> tuple[Entry, ...]:
        return self._entries

    @property
    def token(self) -> str:
        """This beat's lock token (``host:pid:random``), to compare with :meth:`leader`."""
        return self._lock.token

    def leader(self) -> str | None:
        """The lock token of the beat that leads now, if any (one Redis read)."""
        return self._lock.holder()

    @property
    def is_leader(self) -> bool:
        """Whether this beat held the lock at its last tick and still trusts it."""
        return self._lock.is_valid()

    def tick(self, now: float) -> float:
        """Send what is due at ``now`` (if we lead) and return the seconds to sleep.

        Raises:
            TransportError: Redis could not be reached (the run loop backs off and retries).
        """
        standby_s = min(self._lock.ttl_s * _STANDBY_FRACTION, self._max_interval_s)
        if not self._lock.hold():
            return standby_s
        anchors = {e.name: e.schedule.initial_anchor(now) for e in self._entries}
        records = self._store.ensure(anchors) if anchors else {}
        sleep_s = min(self._max_interval_s, self._lock.ttl_s * _RENEW_FRACTION)
        for entry in self._entries:
            sleep_s = min(sleep_s, self._run_if_due(entry, records[entry.name].last_due, now))
        return max(0.0, sleep_s)

    def _run_if_due(self, entry: Entry, last_due: float, now: float) -> float:
        """Claim and send ``entry`` if due; return the seconds until it is due next."""
        due = entry.schedule.latest_due(last_due, now)
        if due is None:
            return entry.schedule.next_run_after(last_due) - now
        if not self._lock.is_valid():
            return 0.0  # renew (and re-read) before sending anything more
        if self._store.claim(entry.name, due, now):
            logger.info("beat: sending %s (%s) due at %.3f", entry.name, entry.task, due)
            self._store.record_result(entry.name, self._send(entry))
        else:
            logger.info("beat: %s due at %.3f was already sent elsewhere", entry.name, due)
        return entry.schedule.next_run_after(due) - now

    def _send(self, entry: Entry) -> str:
        """Send one entry's task; returns the task id, or ``error: ...`` if sending failed."""
        try:
            result = self._app.send_task(
                entry.task, args=entry.args, kwargs=dict(entry.kwargs), **dict(entry.options)
            )
        except Exception as exc:  # one entry's failure must not stop the others
            logger.exception("beat: could not send %s (%s)", entry.name, entry.task)
            return f"error: {exc!r}"
        return str(getattr(result, "id", result))

    def trigger(self, entry_name: str) -> str:
        """Send one entry now, off schedule (the console's ``t`` key); leadership not needed.

        The run is counted and shown as the last run, but the entry's due times do not move.

        Returns:
            The id of the task sent, or ``error: ...`` if sending failed.

        Raises:
            KeyError: no entry has that name.
            TransportError: Redis could not be reached.
        """
        entry = next((e for e in self._entries if e.name == entry_name), None)
        if entry is None:
            raise KeyError(f"no beat entry named {entry_name!r}")
        now = self._clock.time()
        self._store.ensure({entry.name: entry.schedule.initial_anchor(now)})
        result = self._send(entry)
        self._store.record_manual_run(entry.name, now, result)
        return result

    def entries_info(self, now: float | None = None) -> tuple[BeatEntryState, ...]:
        """Every entry with its next and last run, read from Redis in one round trip.

        ``next_run`` may lie in the past when no beat has been leading to send it.
        """
        now = self._clock.time() if now is None else now
        records = self._store.read([e.name for e in self._entries])
        states = []
        for entry in self._entries:
            record = records.get(entry.name)
            last_due = record.last_due if record else entry.schedule.initial_anchor(now)
            states.append(
                BeatEntryState(
                    name=entry.name,
                    task=entry.task,
                    schedule=entry.schedule.describe(),
                    next_run=entry.schedule.next_run_after(last_due),
                    last_run=record.last_run_at if record else None,
                    total_run_count=record.total_run_count if record else 0,
                    last_result=record.last_result if record else None,
                )
            )
        return tuple(states)

    def run(self, stop_event: threading.Event) -> None:
        """Tick until ``stop_event`` is set, then give up the lock.

        Errors of one tick (Redis unreachable, ...) are logged and retried with a capped
        back-off; they never end the loop.
        """
        signals.beat_init.send(sender=self)
        backoff_s = _ERROR_BACKOFF_S
        try:
            while not stop_event.is_set():
                try:
                    delay_s = self.tick(self._clock.time())
                    backoff_s = _ERROR_BACKOFF_S
                except Exception:
                    logger.exception("beat: tick failed; retrying in %.1fs", backoff_s)
                    delay_s, backoff_s = backoff_s, min(backoff_s * 2, _ERROR_BACKOFF_CAP_S)
                self._sleep(delay_s, stop_event)
        finally:
            self.close()

    def _sleep(self, seconds: float, stop_event: threading.Event) -> None:
        deadline = self._clock.monotonic() + seconds
        while not stop_event.is_set():
            left = deadline - self._clock.monotonic()
            if left <= 0:
                return
            self._clock.sleep(min(left, _SLEEP_SLICE_S))

    def close(self) -> None:
        """Give up the leader lock (if held) so a standby takes over at once.

        ``run`` calls this when it ends; call it yourself when driving ``tick`` directly. An
        error is logged, not raised: the lock's TTL frees it anyway.
        """
        try:
            self._lock.release()
        except Exception:
            logger.exception("beat: could not release the leader lock")
