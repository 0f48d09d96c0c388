"""Beat schedules: Celery's crontab examples, DST edges, catch-up, bad input, properties."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tq.beat.scheduler import parse_entry
from tq.beat.schedules import crontab, maybe_schedule, resolve_zone, schedule
from tq.exceptions import ConfigurationError

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(*fields: int, tz: tzinfo = UTC) -> float:
    return datetime(*fields, tzinfo=tz).timestamp()  # type: ignore[arg-type,misc]


def following(sched: crontab, start: float, count: int) -> list[float]:
    times = []
    t = start
    for _ in range(count):
        t = sched.next_run_after(t)
        times.append(t)
    return times


# 2024-01-03 is a Wednesday; January 2024 starts on a Monday.
WED_NOON = at(2024, 1, 3, 12, 7, 30)

CELERY_GUIDE = [
    pytest.param(
        crontab(), WED_NOON, [(1, 3, 12, 8), (1, 3, 12, 9), (1, 3, 12, 10)], id="every-minute"
    ),
    pytest.param(
        crontab(minute=0, hour=0),
        WED_NOON,
        [(1, 4, 0, 0), (1, 5, 0, 0), (1, 6, 0, 0)],
        id="midnight",
    ),
    pytest.param(
        crontab(minute=0, hour="*/3"),
        WED_NOON,
        [(1, 3, 15, 0), (1, 3, 18, 0), (1, 3, 21, 0), (1, 4, 0, 0)],
        id="every-three-hours",
    ),
    pytest.param(
        crontab(minute=0, hour="0,3,6,9,12,15,18,21"),
        WED_NOON,
        [(1, 3, 15, 0), (1, 3, 18, 0), (1, 3, 21, 0), (1, 4, 0, 0)],
        id="hour-list",
    ),
    pytest.param(
        crontab(minute="*/15"),
        WED_NOON,
        [(1, 3, 12, 15), (1, 3, 12, 30), (1, 3, 12, 45), (1, 3, 13, 0)],
        id="quarter-hours",
    ),
    pytest.param(
        crontab(day_of_week="sunday"),
        WED_NOON,
        [(1, 7, 0, 0), (1, 7, 0, 1), (1, 7, 0, 2)],
        id="sunday",
    ),
    pytest.param(
        crontab(minute="*", hour="*", day_of_week="sun"),
        at(2024, 1, 7, 23, 58),
        [(1, 7, 23, 59), (1, 14, 0, 0)],
        id="sun-wraps-a-week",
    ),
    pytest.param(
        crontab(minute="*/10", hour="3,17,22", day_of_week="thu,fri"),
        at(2024, 1, 5, 22, 45),
        [(1, 5, 22, 50), (1, 11, 3, 0), (1, 11, 3, 10)],
        id="thu-fri-at-3-17-22",
    ),
    pytest.param(
        crontab(minute=0, hour="*/2,*/3"),
        WED_NOON,
        [
            (1, 3, 14, 0),
            (1, 3, 15, 0),
            (1, 3, 16, 0),
            (1, 3, 18, 0),
            (1, 3, 20, 0),
            (1, 3, 21, 0),
            (1, 3, 22, 0),
            (1, 4, 0, 0),
        ],
        id="divisible-by-2-or-3",
    ),
    pytest.param(
        crontab(minute=0, hour="*/5"),
        WED_NOON,
        [(1, 3, 15, 0), (1, 3, 20, 0), (1, 4, 0, 0), (1, 4, 5, 0)],
        id="divisible-by-5",
    ),
    pytest.param(
        crontab(minute=0, hour="*/3,8-17"),
        at(2024, 1, 3, 5, 0),
        [(1, 3, 6, 0), (1, 3, 8, 0), (1, 3, 9, 0)]
        + [(1, 3, h, 0) for h in range(10, 19)]
        + [(1, 3, 21, 0), (1, 4, 0, 0)],
        id="thirds-and-office-hours",
    ),
    pytest.param(
        crontab(0, 0, day_of_month="2"),
        WED_NOON,
        [(2, 2, 0, 0), (3, 2, 0, 0), (4, 2, 0, 0)],
        id="second-of-month",
    ),
    pytest.param(
        crontab(0, 0, day_of_month="2-30/2"),
        at(2024, 2, 27, 12),
        [(2, 28, 0, 0), (3, 2, 0, 0), (3, 4, 0, 0)],
        id="even-days",
    ),
    pytest.param(
        crontab(0, 0, day_of_month="1-7,15-21"),
        WED_NOON,
        [(1, 4, 0, 0), (1, 5, 0, 0), (1, 6, 0, 0), (1, 7, 0, 0), (1, 15, 0, 0)],
        id="first-and-third-weeks",
    ),
    pytest.param(
        crontab(0, 0, day_of_month="11", month_of_year="5"),
        WED_NOON,
        [(5, 11, 0, 0), (17, 5, 11)],
        id="eleventh-of-may",
    ),
    pytest.param(
        crontab(0, 0, month_of_year="*/3"),
        at(2024, 2, 10),
        [(4, 1, 0, 0), (4, 2, 0, 0), (4, 3, 0, 0)],
        id="first-month-of-quarters",
    ),
]


def _expected(fields: tuple[int, ...]) -> float:
    if len(fields) == 3 and fields[0] == 17:  # (17, month, day): the same day in 2025
        return at(2025, fields[1], fields[2])
    month, day, hour, minute = fields
    return at(2024, month, day, hour, minute)


@pytest.mark.parametrize(("sched", "start", "expected"), CELERY_GUIDE)
def test_crontab_next_times_follow_the_celery_guide(
    sched: crontab, start: float, expected: list[tuple[int, ...]]
) -> None:
    assert following(sched, start, len(expected)) == [_expected(f) for f in expected]


@pytest.mark.parametrize(
    ("kwargs", "same_as"),
    [
        ({"day_of_week": 7}, {"day_of_week": 0}),
        ({"day_of_week": "SUN"}, {"day_of_week": "0"}),
        ({"day_of_week": "mon-fri"}, {"day_of_week": "1,2,3,4,5"}),
        ({"day_of_week": "fri-mon"}, {"day_of_week": "5,6,0,1"}),
        ({"day_of_week": "sat-sun"}, {"day_of_week": "6,0"}),
        ({"day_of_week": [1, 3]}, {"day_of_week": "mon,wed"}),
        ({"hour": "22-2"}, {"hour": "22,23,0,1,2"}),
        ({"hour": range(8, 18)}, {"hour": "8-17"}),
        ({"minute": {45, 15}}, {"minute": "15,45"}),
        ({"minute": "5/20"}, {"minute": "5,25,45"}),
        ({"month_of_year": "jan,jul"}, {"month_of_year": "1,7"}),
    ],
)
def test_crontab_spellings_that_mean_the_same_fire_at_the_same_times(
    kwargs: dict[str, object], same_as: dict[str, object]
) -> None:
    assert following(crontab(**kwargs), WED_NOON, 30) == following(crontab(**same_as), WED_NOON, 30)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"minute": 60}, "minute"),
        ({"hour": "24"}, "hour"),
        ({"hour": "*/0"}, "step"),
        ({"day_of_week": "funday"}, "day_of_week"),
        ({"day_of_week": 8}, "day_of_week"),
        ({"day_of_month": 0}, "day_of_month"),
        ({"month_of_year": 13}, "month_of_year"),
        ({"minute": "1-2-3"}, "minute"),
        ({"minute": ""}, "minute"),
        ({"minute": 1.5}, "minute"),
        ({"minute": True}, "minute"),
        ({"minute": []}, "minute"),
        ({"day_of_month": "L"}, "day_of_month"),
        ({"day_of_week": "1#2"}, "day_of_week"),
        ({"minute": "*,"}, "minute"),
        ({"day_of_month": "31", "month_of_year": "2,4"}, "no calendar date"),
        ({"tz": "Mars/Olympus_Mons"}, "time zone"),
    ],
)
def test_bad_crontab_raises_a_configuration_error_naming_the_problem(
    kwargs: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        crontab(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value", [0, -1, timedelta(0), float("nan"), float("inf"), "10", True, None]
)
def test_bad_interval_raises_a_configuration_error(value: object) -> None:
    with pytest.raises(ConfigurationError):
        maybe_schedule(value)


def test_maybe_schedule_reads_numbers_timedeltas_and_schedules_as_celery_does() -> None:
    assert maybe_schedule(10) == schedule(10.0)
    assert maybe_schedule(timedelta(minutes=1), relative=True) == schedule(60, relative=True)
    cron = crontab(minute=0)
    assert maybe_schedule(cron, relative=True) is cron


def test_celery_schedule_objects_from_a_celeryconfig_are_understood() -> None:
    celery_schedules = pytest.importorskip("celery.schedules")
    cron = maybe_schedule(
        celery_schedules.crontab(minute="*/15", hour="8-17", day_of_week="mon-fri")
    )
    assert cron == crontab(minute="*/15", hour="8-17", day_of_week="mon-fri")
    interval = maybe_schedule(celery_schedules.schedule(timedelta(seconds=10), relative=True))
    assert interval == schedule(10, relative=True)


# --- daylight saving time ---------------------------------------------------------------------
# Europe/Berlin 2024: clocks jump 02:00 CET -> 03:00 CEST on March 31 (01:00 UTC) and fall back
# 03:00 CEST -> 02:00 CET on October 27 (01:00 UTC).


def test_fixed_time_in_the_spring_forward_gap_fires_once_at_the_end_of_the_gap() -> None:
    nightly = crontab(minute=30, hour=2, tz=BERLIN)
    times = following(nightly, at(2024, 3, 30, 12, tz=BERLIN), 2)
    assert times == [at(2024, 3, 31, 1, 0), at(2024, 4, 1, 0, 30)]  # 03:00 CEST, 02:30 CEST


def test_fixed_time_repeated_by_fall_back_fires_once() -> None:
    nightly = crontab(minute=30, hour=2, tz=BERLIN)
    times = following(nightly, at(2024, 10, 26, 12, tz=BERLIN), 2)
    assert times == [at(2024, 10, 27, 0, 30), at(2024, 10, 28, 1, 30)]  # 02:30 CEST, next day CET
    assert nightly.latest_due(at(2024, 10, 27, 0, 30), at(2024, 10, 27, 1, 45)) is None


def test_fixed_minutes_in_the_gap_collapse_into_one_run() -> None:
    quarterly = crontab(minute="0,15,30,45", hour=2, tz=BERLIN)
    assert quarterly.is_fixed_time
    times = following(quarterly, at(2024, 3, 31, 0, tz=BERLIN), 2)
    assert times == [at(2024, 3, 31, 1, 0), at(2024, 4, 1, 0, 0)]


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK])
def test_hourly_wildcard_crontab_stays_one_real_hour_apart_across_both_transitions(
    zone: ZoneInfo,
) -> None:
    hourly = crontab(minute=0).with_zone(zone)
    for start in (
        at(2024, 3, 30, 12, tz=zone),
        at(2024, 10, 26, 12, tz=zone),
        at(2024, 3, 9, 12, tz=zone),
        at(2024, 11, 2, 12, tz=zone),
    ):
        times = following(hourly, start, 30)
        assert {b - a for a, b in itertools.pairwise(times)} == {3600.0}


def test_wildcard_minutes_skip_the_missing_hour_and_repeat_the_doubled_one() -> None:
    halves = crontab(minute="*/30", hour="1-3", tz=BERLIN)
    spring = following(halves, at(2024, 3, 31, 0, 0, tz=BERLIN), 4)
    assert [datetime.fromtimestamp(t, BERLIN).strftime("%H:%M%z") for t in spring] == [
        "01:00+0100",
        "01:30+0100",
        "03:00+0200",
        "03:30+0200",
    ]
    autumn = following(halves, at(2024, 10, 27, 0, 0, tz=BERLIN), 7)
    assert [datetime.fromtimestamp(t, BERLIN).strftime("%H:%M%z") for t in autumn] == [
        "01:00+0200",
        "01:30+0200",
        "02:00+0200",
        "02:30+0200",
        "02:00+0100",
        "02:30+0100",
        "03:00+0100",
    ]


def test_app_zone_binds_only_schedules_without_their_own() -> None:
    own = crontab(hour=9, minute=0, tz="America/New_York")
    assert own.with_zone(BERLIN) is own
    bound = crontab(hour=9, minute=0).with_zone(BERLIN)
    assert bound.next_run_after(at(2024, 6, 1)) == at(2024, 6, 1, 9, 0, tz=BERLIN)


def test_resolve_zone_follows_timezone_then_enable_utc() -> None:
    assert resolve_zone("Europe/Berlin") == BERLIN
    assert resolve_zone(None, enable_utc=True) is UTC
    assert resolve_zone(BERLIN, enable_utc=False) is BERLIN
    assert isinstance(resolve_zone(None, enable_utc=False), tzinfo)
    with pytest.raises(ConfigurationError, match="timezone"):
        resolve_zone("Not/AZone")


# --- due times and catch-up -------------------------------------------------------------------


def test_interval_is_due_like_celery() -> None:
    every10 = schedule(10)
    assert every10.is_due(100.0, 105.0) == (False, 5.0)
    assert every10.is_due(100.0, 110.0) == (True, 10.0)
    due, next_in = every10.is_due(100.0, 125.0)  # two periods missed: fire once, stay on the grid
    assert due and next_in == 5.0


def test_interval_catch_up_fires_the_latest_missed_due_time_once() -> None:
    every10 = schedule(10)
    assert every10.latest_due(100.0, 109.9) is None
    assert every10.latest_due(100.0, 110.0) == 110.0
    assert every10.latest_due(100.0, 1_000_005.0) == 1_000_000.0


def test_relative_interval_is_aligned_to_its_resolution() -> None:
    hourly = schedule(timedelta(hours=1), relative=True).with_zone(BERLIN)
    anchor = hourly.initial_anchor(at(2024, 6, 1, 10, 17, 45))
    assert hourly.next_run_after(anchor) == at(2024, 6, 1, 11, 0)
    plain = schedule(timedelta(hours=1))
    assert plain.next_run_after(plain.initial_anchor(at(2024, 6, 1, 10, 17))) == at(
        2024, 6, 1, 11, 17
    )


def test_crontab_catch_up_after_a_week_down_fires_the_latest_match_once() -> None:
    every_minute = crontab()
    last = at(2024, 1, 1)
    assert every_minute.latest_due(last, at(2024, 1, 8, 3, 4, 30)) == at(2024, 1, 8, 3, 4)
    assert every_minute.is_due(last, at(2024, 1, 8, 3, 4, 30)) == (True, 30.0)
    assert every_minute.latest_due(last, at(2024, 1, 1, 0, 0, 59)) is None


def test_describe_is_short_and_readable() -> None:
    assert schedule(90).describe() == "every 1m30s"
    assert schedule(0.5).describe() == "every 0.5s"
    assert (
        crontab(minute="*/15", tz="Europe/Berlin").describe()
        == "crontab */15 * * * * (Europe/Berlin)"
    )
    assert repr(crontab(0, 0, day_of_month="2")) == "<crontab: 0 0 2 * * (m/h/dM/MY/d)>"


# --- beat_schedule entries --------------------------------------------------------------------


def test_entry_in_celery_format_is_parsed_and_bound_to_the_app_zone() -> None:
    entry = parse_entry(
        "nightly",
        {
            "task": "tasks.report",
            "schedule": crontab(hour=2, minute=30),
            "args": [1],
            "kwargs": {"x": 2},
            "options": {"queue": "q"},
        },
        BERLIN,
    )
    assert (entry.task, entry.args, entry.kwargs, entry.options) == (
        "tasks.report",
        (1,),
        {"x": 2},
        {"queue": "q"},
    )
    assert isinstance(entry.schedule, crontab)
    assert entry.schedule.tz == BERLIN
    relative = parse_entry("r", {"task": "t", "schedule": 3600.0, "relative": True}, UTC)
    assert relative.schedule == schedule(3600, relative=True, tz=UTC)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"schedule": 1.0}, "'task'"),
        ({"task": "t"}, "'schedule' is missing"),
        ({"task": "t", "schedule": "hourly"}, "schedule="),
        ({"task": "t", "schedule": 1.0, "kwarg": {}}, "unknown keys"),
        ({"task": "t", "schedule": 1.0, "args": "abc"}, "'args'"),
        ({"task": "t", "schedule": 1.0, "options": []}, "'options'"),
    ],
)
def test_bad_entry_raises_a_configuration_error_naming_the_entry(
    spec: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ConfigurationError, match=fragment) as caught:
        parse_entry("broken", spec, UTC)
    assert "beat_schedule['broken']" in str(caught.value)


# --- properties -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    text: str
    values: frozenset[int]


def fields(low: int, high: int, star_high: int | None = None) -> st.SearchStrategy[Field]:
    """Patterns for one field, with the numbers each matches (``*`` spans up to ``star_high``)."""
    top = high if star_high is None else star_high
    every = st.just(Field("*", frozenset(range(low, top + 1))))
    step = st.integers(1, max(1, (high - low) // 2)).map(
        lambda n: Field(f"*/{n}", frozenset(range(low, top + 1, n)))
    )
    one = st.integers(low, high).map(lambda n: Field(str(n), frozenset({n})))
    span = st.tuples(st.integers(low, high), st.integers(low, high)).map(
        lambda ab: Field(f"{min(ab)}-{max(ab)}", frozenset(range(min(ab), max(ab) + 1)))
    )
    many = st.sets(st.integers(low, high), min_size=1, max_size=5).map(
        lambda s: Field(",".join(map(str, sorted(s))), frozenset(s))
    )
    return st.one_of(every, step, one, span, many)


def matches(wall: datetime, m: Field, h: Field, dom: Field, dow: Field) -> bool:
    weekday = (wall.weekday() + 1) % 7  # Sunday = 0
    return (
        wall.minute in m.values
        and wall.hour in h.values
        and wall.day in dom.values
        and weekday in dow.values
    )


def brute_force_next_utc(t: float, m: Field, h: Field, dom: Field, dow: Field) -> float:
    day = datetime.fromtimestamp(t, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for _ in range(366 * 5):
        if day.day in dom.values and (day.weekday() + 1) % 7 in dow.values:
            for hour in sorted(h.values):
                for minute in sorted(m.values):
                    wall = day.replace(hour=hour, minute=minute)
                    if wall.timestamp() > t:
                        return wall.timestamp()
        day += timedelta(days=1)
    raise AssertionError("no match in five years")


instants = st.floats(min_value=at(2001, 1, 1), max_value=at(2037, 1, 1), allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(fields(0, 59), fields(0, 23), fields(1, 28, star_high=31), fields(0, 6), instants)
def test_next_utc_time_is_the_first_match_after_now(
    m: Field, h: Field, dom: Field, dow: Field, t: float
) -> None:
    sched = crontab(m.text, h.text, dow.text, dom.text)
    assert sched.next_run_after(t) == brute_force_next_utc(t, m, h, dom, dow)


@settings(max_examples=150, deadline=None)
@given(
    fields(0, 59),
    fields(0, 23),
    fields(1, 28, star_high=31),
    fields(0, 6),
    instants,
    st.sampled_from([BERLIN, NEW_YORK]),
)
def test_next_zoned_time_is_later_and_matches_or_ends_a_gap(
    m: Field, h: Field, dom: Field, dow: Field, t: float, zone: ZoneInfo
) -> None:
    sched = crontab(m.text, h.text, dow.text, dom.text, tz=zone)
    nxt = sched.next_run_after(t)
    assert nxt > t
    wall = datetime.fromtimestamp(nxt, zone)
    ends_a_gap = datetime.fromtimestamp(nxt - 1, zone).utcoffset() != wall.utcoffset()
    assert matches(wall, m, h, dom, dow) or (sched.is_fixed_time and ends_a_gap)


@settings(max_examples=100, deadline=None)
@given(
    fields(0, 59), fields(0, 23), instants, st.floats(0, 3 * 86400), st.sampled_from([UTC, BERLIN])
)
def test_latest_due_is_a_run_time_with_nothing_due_after_it(
    m: Field, h: Field, last: float, gap: float, zone: tzinfo
) -> None:
    sched = crontab(m.text, h.text, tz=zone)
    now = last + gap
    latest = sched.latest_due(last, now)
    if latest is None:
        assert sched.next_run_after(last) > now
    else:
        assert last < latest <= now
        assert sched.next_run_after(latest) > now
        assert sched.next_run_after(latest - 0.5) == latest


@settings(max_examples=200, deadline=None)
@given(st.floats(0.001, 86400 * 30), instants, st.floats(0, 86400 * 365))
def test_interval_latest_due_is_on_the_grid(every: float, last: float, gap: float) -> None:
    sched = schedule(every)
    latest = sched.latest_due(last, last + gap)
    if latest is None:
        assert last + every > last + gap
    else:
        periods = (latest - last) / every
        assert latest <= last + gap < latest + every + 1e-6  # within floating-point error
        assert round(periods) >= 1
        assert abs(latest - (last + round(periods) * every)) < 1e-6
