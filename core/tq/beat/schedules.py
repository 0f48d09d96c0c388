"""Schedules for beat: ``schedule`` (every N seconds) and ``crontab``, with Celery's semantics.

Owns the schedule values a ``beat_schedule`` entry names, and the pure time arithmetic beat needs
from them. Time is epoch seconds (float) throughout. Nothing here does I/O or reads a clock: every
function takes ``now`` or ``t``. Must not import Redis, ``tq.app``, ``tq.worker`` or the console.

What beat asks of a schedule (:class:`Schedule`):

* ``next_run_after(t)``: the first due time strictly after ``t``.
* ``latest_due(last_due, now)``: the latest due time in ``(last_due, now]``, or ``None`` when
  nothing is due. Beat fires *that* due time once, so after downtime a schedule catches up with a
  single run, not one run per missed due time.
* ``is_due(last_run_at, now)``: Celery's ``(is_due, next_in_seconds)`` pair, built from the two.
* ``initial_anchor(now)``: what to store as "last due" for an entry beat sees for the first time
  (like Celery, a new entry is not due at once: an interval waits one period, a crontab waits
  for its next match).

An interval ``schedule`` is a grid: due times are ``anchor + k * run_every``. Celery instead
counts from the moment it last sent, so it drifts by the loop's lateness; the grid does not, and
two beats that read the same anchor agree on every due time. ``relative=True`` aligns the grid to
the interval's resolution on the local clock (an hourly schedule fires on the hour), which is what
Celery's rounding gives for intervals that are whole multiples of their resolution.

Time zones. A schedule without its own ``tz`` uses the app's: ``timezone`` if set, else UTC when
``enable_utc`` (Celery's default), else the machine's local zone (:func:`resolve_zone`).
A crontab matches wall-clock times in its zone. Around daylight-saving transitions it follows
Vixie/ISC cron:

* a *fixed-time* crontab (neither minute nor hour starts with ``*``) whose wall time is skipped
  by spring-forward fires once at the end of the gap (Europe/Berlin, ``hour=2, minute=30`` fires
  at 03:00 CEST), and one whose wall time happens twice at fall-back fires once, the first time;
* a *wildcard* crontab (minute or hour starts with ``*``, like ``crontab(minute=0)``) follows
  elapsed time: wall times inside the gap do not exist and are not fired, and the repeated hour
  runs again, so "every hour" stays one hour apart in real time.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import NamedTuple, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tq.beat import _cron
from tq.exceptions import ConfigurationError

# Where the machine's zone is read from when enable_utc is off and no timezone is set.
_LOCALTIME_PATH = "/etc/localtime"
# The attributes (with an ``_orig_`` prefix) that hold a Celery crontab's fields as written.
_CELERY_CRONTAB_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")


class Due(NamedTuple):
    """Celery's ``schedstate``: whether to run now, and seconds until the next check."""

    is_due: bool
    next_in_s: float


@runtime_checkable
class Schedule(Protocol):
    """What beat needs from a schedule; ``schedule`` and ``crontab`` implement it."""

    def with_zone(self, zone: tzinfo) -> Schedule:
        """This schedule in ``zone`` unless it names its own zone."""
        ...

    def initial_anchor(self, now: float) -> float:
        """The "last due" to store for an entry seen for the first time at ``now``."""
        ...

    def next_run_after(self, t: float) -> float:
        """The first due time strictly after ``t``."""
        ...

    def latest_due(self, last_due: float, now: float) -> float | None:
        """The latest due time in ``(last_due, now]``, or ``None``."""
        ...

    def is_due(self, last_run_at: float, now: float) -> Due:
        """Celery's pair: run now?, and seconds until the next check."""
        ...

    def describe(self) -> str:
        """A short human-readable form for logs and the console."""
        ...


def resolve_zone(timezone: str | tzinfo | None, enable_utc: bool = True) -> tzinfo:
    """The zone schedules use, from the app's ``timezone`` and ``enable_utc`` settings.

    Raises:
        ConfigurationError: ``timezone`` names no zone in the tz database.
    """
    if isinstance(timezone, tzinfo):
        return timezone
    if timezone:
        return _zone(timezone, "timezone")
    if enable_utc:
        return UTC
    return _local_zone()


def _zone(name: str, setting: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(f"{setting}={name!r} is not a known time zone") from exc


def _local_zone() -> tzinfo:
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    if os.path.exists(_LOCALTIME_PATH):
        with open(_LOCALTIME_PATH, "rb") as localtime:
            return ZoneInfo.from_file(localtime, key="localtime")
    return datetime.now().astimezone().tzinfo or UTC


def _is_due(sched: Schedule, last_run_at: float, now: float) -> Due:
    due = sched.latest_due(last_run_at, now)
    if due is None:
        return Due(False, sched.next_run_after(last_run_at) - now)
    return Due(True, sched.next_run_after(due) - now)


def _seconds(run_every: float | timedelta) -> float:
    if isinstance(run_every, timedelta):
        seconds = run_every.total_seconds()
    elif isinstance(run_every, int | float) and not isinstance(run_every, bool):
        seconds = float(run_every)
    else:
        raise ConfigurationError(f"schedule run_every={run_every!r}: expected seconds or timedelta")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(f"schedule run_every={run_every!r}: must be more than 0 seconds")
    return seconds


def _resolution(every_s: float) -> float:
    """Celery's ``delta_resolution``: the unit a relative interval is rounded to."""
    for unit in (86400.0, 3600.0, 60.0):
        if every_s >= unit:
            return unit
    return 1.0


def _round_down(t: float, unit: float, zone: tzinfo) -> float:
    local = datetime.fromtimestamp(t, zone)
    if unit >= 86400.0:
        local = local.replace(hour=0, minute=0, second=0, microsecond=0)
    elif unit >= 3600.0:
        local = local.replace(minute=0, second=0, microsecond=0)
    elif unit >= 60.0:
        local = local.replace(second=0, microsecond=0)
    else:
        local = local.replace(microsecond=0)
    return min(local.timestamp(), t)


def _format_seconds(seconds: float) -> str:
    if seconds < 60 or seconds != int(seconds):
        return f"{seconds:g}s"
    parts = []
    rest = int(seconds)
    for unit, label in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        if rest >= unit:
            parts.append(f"{rest // unit}{label}")
            rest %= unit
    return "".join(parts)


@dataclass(frozen=True, slots=True, init=False)
class schedule:  # Celery's name
    """Run every ``run_every`` (seconds or a timedelta), like Celery's ``schedule``.

    Args:
        run_every: the period, more than 0.
        relative: align the grid to the period's resolution on the local clock.
        tz: the zone for ``relative`` rounding; the app's zone when omitted.

    Raises:
        ConfigurationError: the period is not a positive number of seconds.
    """

    run_every_s: float
    relative: bool
    tz: tzinfo | None

    def __init__(
        self, run_every: float | timedelta, relative: bool = False, tz: tzinfo | None = None
    ) -> None:
        object.__setattr__(self, "run_every_s", _seconds(run_every))
        object.__setattr__(self, "relative", bool(relative))
        object.__setattr__(self, "tz", tz)

    @property
    def run_every(self) -> timedelta:
        return timedelta(seconds=self.run_every_s)

    def with_zone(self, zone: tzinfo) -> schedule:
        return self if self.tz is not None else schedule(self.run_every_s, self.relative, zone)

    def initial_anchor(self, now: float) -> float:
        first = now + self.run_every_s
        if self.relative:
            first = _round_down(first, _resolution(self.run_every_s), self.tz or UTC)
        return first - self.run_every_s

    def next_run_after(self, t: float) -> float:
        return t + self.run_every_s

    def latest_due(self, last_due: float, now: float) -> float | None:
        first = last_due + self.run_every_s
        if first > now:
            return None
        periods = math.floor((now - first) / self.run_every_s)
        # The division can land one period off in floating point; settle on the grid point.
        while periods > 0 and first + periods * self.run_every_s > now:
            periods -= 1
        while first + (periods + 1) * self.run_every_s <= now:
            periods += 1
        return first + periods * self.run_every_s

    def is_due(self, last_run_at: float, now: float) -> Due:
        return _is_due(self, last_run_at, now)

    def describe(self) -> str:
        relative = " (relative)" if self.relative else ""
        return f"every {_format_seconds(self.run_every_s)}{relative}"

    def __repr__(self) -> str:
        return f"<freq: {_format_seconds(self.run_every_s)}>"


@dataclass(frozen=True, slots=True, init=False)
class crontab:  # Celery's name
    """Run when the wall clock matches, with Celery's field syntax and argument order.

    Each field takes a number, a pattern string (``'*'``, ``'*/15'``, ``'8-17'``, ``'2-30/2'``,
    ``'*/3,8-17'``, ``'mon-fri'``, ``'sunday'``) or an iterable of numbers. ``day_of_week``
    counts from Sunday = 0 (7 is Sunday too); ``day_of_month`` and ``day_of_week`` must both
    match, as in Celery.

    Raises:
        ConfigurationError: a field is malformed or out of range, no calendar date matches, or
            ``tz`` names no zone.
    """

    minute: str
    hour: str
    day_of_week: str
    day_of_month: str
    month_of_year: str
    tz: tzinfo | None
    expression: str  # the five fields as croniter reads them: m h dom mon dow
    is_fixed_time: bool  # neither minute nor hour starts with "*" (see the DST policy above)

    def __init__(
        self,
        minute: object = "*",
        hour: object = "*",
        day_of_week: object = "*",
        day_of_month: object = "*",
        month_of_year: object = "*",
        tz: str | tzinfo | None = None,
    ) -> None:
        specs = (_cron.MINUTE, _cron.HOUR, _cron.DAY_OF_MONTH, _cron.MONTH_OF_YEAR)
        values = (minute, hour, day_of_month, month_of_year)
        texts = [_cron.field_text(spec, value) for spec, value in zip(specs, values, strict=True)]
        dow_text = _cron.field_text(_cron.DAY_OF_WEEK, day_of_week)
        sets = [_cron.expand_field(spec, text) for spec, text in zip(specs, texts, strict=True)]
        dow_set = _cron.expand_field(_cron.DAY_OF_WEEK, dow_text)
        shown = " ".join([*texts, dow_text])
        _cron.check_satisfiable(sets[2], sets[3], shown)
        lists = [_cron.cron_list(spec, numbers) for spec, numbers in zip(specs, sets, strict=True)]
        lists.append(_cron.cron_list(_cron.DAY_OF_WEEK, dow_set))
        zone = _zone(tz, "crontab tz") if isinstance(tz, str) else tz
        for name, value in (
            ("minute", texts[0]),
            ("hour", texts[1]),
            ("day_of_week", dow_text),
            ("day_of_month", texts[2]),
            ("month_of_year", texts[3]),
            ("tz", zone),
            ("expression", " ".join(lists)),
            ("is_fixed_time", not (texts[0].startswith("*") or texts[1].startswith("*"))),
        ):
            object.__setattr__(self, name, value)

    @property
    def zone(self) -> tzinfo:
        """The zone this crontab matches wall-clock times in (UTC until bound to an app)."""
        return self.tz or UTC

    def with_zone(self, zone: tzinfo) -> crontab:
        if self.tz is not None:
            return self
        return crontab(
            self.minute, self.hour, self.day_of_week, self.day_of_month, self.month_of_year, zone
        )

    def initial_anchor(self, now: float) -> float:
        return now

    def next_run_after(self, t: float) -> float:
        return next(_cron.instants_after(self.expression, t, self.zone, self.is_fixed_time))

    def latest_due(self, last_due: float, now: float) -> float | None:
        instants = _cron.instants_after(self.expression, last_due, self.zone, self.is_fixed_time)
        first = next(instants)
        if first > now:
            return None
        second = next(instants)
        if second > now:
            return first
        # Several due times were missed: search back from ``now`` instead of walking the gap.
        start = max(second, _cron.latest_match_before(self.expression, now, self.zone))
        latest = second
        for instant in _cron.instants_after(self.expression, start, self.zone, self.is_fixed_time):
            if instant > now:
                break
            latest = instant
        return latest

    def is_due(self, last_run_at: float, now: float) -> Due:
        return _is_due(self, last_run_at, now)

    def describe(self) -> str:
        fields = f"{self.minute} {self.hour} {self.day_of_month} {self.month_of_year}"
        zone = f" ({self.tz})" if self.tz is not None else ""
        return f"crontab {fields} {self.day_of_week}{zone}"

    def __repr__(self) -> str:
        return (
            f"<crontab: {self.minute} {self.hour} {self.day_of_month} {self.month_of_year} "
            f"{self.day_of_week} (m/h/dM/MY/d)>"
        )


def maybe_schedule(value: object, relative: bool = False) -> Schedule:
    """The schedule a ``beat_schedule`` entry's ``schedule`` value means (Celery's rules).

    A number is seconds and a ``timedelta`` a period (both honour ``relative``); a schedule object
    is used as it is. Celery's own ``crontab`` and ``schedule`` objects (from a celeryconfig that
    imports ``celery.schedules``) are read by their attributes, without importing Celery.

    Raises:
        ConfigurationError: the value is none of those.
    """
    if isinstance(value, Schedule):
        return value
    if isinstance(value, int | float | timedelta) and not isinstance(value, bool):
        return schedule(value, relative=relative)
    if all(hasattr(value, f"_orig_{name}") for name in _CELERY_CRONTAB_FIELDS):
        fields = {name: getattr(value, f"_orig_{name}") for name in _CELERY_CRONTAB_FIELDS}
        return crontab(**fields)
    run_every = getattr(value, "run_every", None)
    if isinstance(run_every, timedelta) and type(value).__name__ == "schedule":
        return schedule(run_every, relative=bool(getattr(value, "relative", False)))
    raise ConfigurationError(
        f"schedule={value!r}: expected seconds, a timedelta, schedule(...) or crontab(...)"
    )
