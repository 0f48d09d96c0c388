"""Crontab internals: Celery's field syntax, and wall-clock matches turned into instants.

Owns the two hard parts behind :class:`tq.beat.schedules.crontab`, kept out of the public module:

* ``expand_field`` parses one field the way Celery's ``crontab_parser`` does (``*``, ``*/15``,
  ``1-5``, ``2-30/2``, lists such as ``*/3,8-17``, ranges that wrap such as ``fri-mon`` or
  ``22-2``, day names ``sun`` / ``sunday``, and ``7`` as Sunday like cron) into a set of numbers.
* ``instants_after`` asks croniter for the wall-clock times that match and maps each one to epoch
  seconds in a time zone, following the DST policy written in ``tq.beat.schedules``.

Pure functions of their arguments. Must not import Redis, ``tq.app``, ``tq.worker`` or the console.
"""

from __future__ import annotations

import calendar
import heapq
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import cast

from croniter import croniter

from tq.exceptions import ConfigurationError

# Wall-clock look-back when a DST transition is near, so that a wall time repeated by a fall-back
# transition is still found; larger than any daylight-saving shift in the tz database (2 h).
FOLD_MARGIN = timedelta(hours=3)
# How many years croniter may search for the next matching day. February 29th on a given weekday
# recurs within 40 years, even across a century that skips its leap day.
MAX_YEARS_BETWEEN_MATCHES = 50

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FULL_DAY_NAMES = tuple(calendar.day_name[(i - 1) % 7].lower() for i in range(7))
_MONTH_NAMES = tuple(name.lower() for name in calendar.month_abbr[1:])
_FULL_MONTH_NAMES = tuple(name.lower() for name in calendar.month_name[1:])
_PART = re.compile(r"^(?P<range>\*|\w+|\w+-\w+)(?:/(?P<step>\d+))?$")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One crontab field: its name, its numeric bounds and the names it accepts."""

    name: str
    low: int
    high: int
    names: dict[str, int]


def _names(short: tuple[str, ...], full: tuple[str, ...], first: int) -> dict[str, int]:
    table = {name: i + first for i, name in enumerate(short)}
    table.update({name: i + first for i, name in enumerate(full)})
    return table


MINUTE = FieldSpec("minute", 0, 59, {})
HOUR = FieldSpec("hour", 0, 23, {})
DAY_OF_WEEK = FieldSpec("day_of_week", 0, 7, _names(_DAY_NAMES, _FULL_DAY_NAMES, 0))
DAY_OF_MONTH = FieldSpec("day_of_month", 1, 31, {})
MONTH_OF_YEAR = FieldSpec("month_of_year", 1, 12, _names(_MONTH_NAMES, _FULL_MONTH_NAMES, 1))


def field_text(spec: FieldSpec, value: object) -> str:
    """Turn what a user passed for a field (int, str or an iterable of them) into its text."""
    if isinstance(value, bool):
        raise ConfigurationError(f"crontab {spec.name}={value!r}: expected a number or a pattern")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if not text:
            raise ConfigurationError(f"crontab {spec.name}={value!r}: empty pattern")
        return text
    if isinstance(value, Iterable):
        items = sorted(value) if isinstance(value, set | frozenset) else list(value)
        if not items:
            raise ConfigurationError(f"crontab {spec.name}={value!r}: empty collection")
        return ",".join(field_text(spec, item) for item in items)
    raise ConfigurationError(f"crontab {spec.name}={value!r}: expected a number or a pattern")


def expand_field(spec: FieldSpec, text: str) -> frozenset[int]:
    """Expand one field's text into the numbers it matches (Sunday is 0; 7 becomes 0).

    Raises:
        ConfigurationError: the pattern is not valid for this field; the message says why.
    """
    numbers: set[int] = set()
    for part in text.split(","):
        match = _PART.match(part)
        if match is None:
            raise ConfigurationError(f"crontab {spec.name}={text!r}: cannot parse {part!r}")
        step = int(match["step"]) if match["step"] is not None else 1
        if step < 1:
            raise ConfigurationError(f"crontab {spec.name}={text!r}: step must be 1 or more")
        stepped = match["step"] is not None
        numbers.update(_expand_range(spec, text, match["range"], stepped)[::step])
    if spec is DAY_OF_WEEK and 7 in numbers:
        numbers.discard(7)
        numbers.add(0)
    return frozenset(numbers)


def _expand_range(spec: FieldSpec, text: str, part: str, stepped: bool) -> list[int]:
    if part == "*":
        return list(range(spec.low, spec.high + 1 if spec is not DAY_OF_WEEK else 7))
    bounds = [_number(spec, text, token) for token in part.split("-")]
    first, last = bounds[0], bounds[-1]
    if len(bounds) == 1 and stepped:  # cron's "5/15": from 5 to the end of the field
        last = spec.high
    if last >= first:
        return list(range(first, last + 1))
    # Celery wraps a reversed range around the end of the field: 22-2 is 22, 23, 0, 1, 2
    # (and fri-mon is 5, 6, 0, 1: the week wraps after Saturday).
    top = 6 if spec is DAY_OF_WEEK else spec.high
    return list(range(first, top + 1)) + list(range(spec.low, last + 1))


def _number(spec: FieldSpec, text: str, token: str) -> int:
    if token.isdigit():
        number = int(token)
    elif token in spec.names:
        number = spec.names[token]
    else:
        raise ConfigurationError(f"crontab {spec.name}={text!r}: {token!r} is not a number")
    if not spec.low <= number <= spec.high:
        raise ConfigurationError(
            f"crontab {spec.name}={text!r}: {number} is outside {spec.low}-{spec.high}"
        )
    return number


def cron_list(spec: FieldSpec, numbers: frozenset[int]) -> str:
    """The field as croniter reads it: ``*`` when every value matches, else a sorted list."""
    full = range(spec.low, (spec.high if spec is DAY_OF_WEEK else spec.high + 1))
    if numbers.issuperset(full):
        return "*"
    return ",".join(str(n) for n in sorted(numbers))


def check_satisfiable(days: frozenset[int], months: frozenset[int], text: str) -> None:
    """Raise ``ConfigurationError`` if no calendar date has one of ``days`` in one of ``months``."""
    longest = {month: calendar.monthrange(2024, month)[1] for month in months}  # 2024: leap year
    if not any(day <= longest[month] for month in months for day in days):
        raise ConfigurationError(f"crontab {text}: no calendar date matches")


def _walls_after(expression: str, wall: datetime) -> Iterator[datetime]:
    """Naive wall-clock times that match, strictly after ``wall``, in order."""
    it = croniter(
        expression,
        wall,
        day_or=False,  # Celery requires day_of_month AND day_of_week, unlike classic cron.
        max_years_between_matches=MAX_YEARS_BETWEEN_MATCHES,
    )
    while True:
        yield cast(datetime, it.get_next(datetime))


def _gap_end(before: float, after: float, zone: tzinfo) -> float:
    """The instant a spring-forward gap ends: the first second in (before, after] on the new
    offset (tz database transitions fall on whole seconds)."""
    target = datetime.fromtimestamp(after, zone).utcoffset()
    low, high = int(before), int(after) + 1
    while low < high:
        mid = (low + high) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == target:
            high = mid
        else:
            low = mid + 1
    return float(low)


def map_wall(wall: datetime, zone: tzinfo, fixed: bool) -> tuple[float, tuple[float, ...]]:
    """Where one matching wall time lands in ``zone``.

    Returns ``(lower, instants)``: ``lower`` is the first instant whose wall time is at or after
    ``wall`` (later walls never map before it), ``instants`` the firing instants of this wall
    under the DST policy (``fixed`` entries fire once, wildcard entries follow elapsed time).
    """
    first = wall.replace(tzinfo=zone, fold=0).timestamp()
    second = wall.replace(tzinfo=zone, fold=1).timestamp()
    if first == second:
        return first, (first,)
    if first < second:  # repeated by a fall-back transition
        return first, ((first,) if fixed else (first, second))
    end = _gap_end(second, first, zone)  # skipped by a spring-forward transition
    return end, ((end,) if fixed else ())


def _is_transition_near(t: float, zone: tzinfo) -> bool:
    span = FOLD_MARGIN.total_seconds()
    before = datetime.fromtimestamp(t - span, zone).utcoffset()
    return before != datetime.fromtimestamp(t + span, zone).utcoffset()


def instants_after(expression: str, t: float, zone: tzinfo, fixed: bool) -> Iterator[float]:
    """The firing instants (epoch seconds) strictly after ``t``, increasing, without repeats."""
    wall = datetime.fromtimestamp(t, zone).replace(tzinfo=None, fold=0)
    if _is_transition_near(t, zone):
        wall -= FOLD_MARGIN
    pending: list[float] = []
    last = t
    for match in _walls_after(expression, wall):
        lower, instants = map_wall(match, zone, fixed)
        while pending and pending[0] <= lower:
            instant = heapq.heappop(pending)
            if instant > last:
                last = instant
                yield instant
        for instant in instants:
            heapq.heappush(pending, instant)


def latest_match_before(expression: str, t: float, zone: tzinfo) -> float:
    """An instant a little before the latest match that lies a safe margin before ``t``.

    Used to start a short forward search for the latest firing instant at or before ``t``.
    """
    wall = datetime.fromtimestamp(t, zone).replace(tzinfo=None, fold=0) - FOLD_MARGIN
    it = croniter(
        expression, wall, day_or=False, max_years_between_matches=MAX_YEARS_BETWEEN_MATCHES
    )
    previous = cast(datetime, it.get_prev(datetime))
    lower, _ = map_wall(previous, zone, fixed=True)
    return lower - 1.0
