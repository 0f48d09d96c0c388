"""format.py: the pure formatting helpers behind every cell of the console."""

from __future__ import annotations

import json
import time

import pytest

from tq_console import format as fmt

pytestmark = pytest.mark.console


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.35, "350ms"),
        (12.34, "12.3s"),
        (185, "3m 05s"),
        (7380, "2h 03m"),
        (200000, "2d 07h"),
        (None, "—"),
    ],
)
def test_duration_is_short_and_precise(seconds: float | None, text: str) -> None:
    assert fmt.duration(seconds) == text


def test_until_reads_like_speech() -> None:
    now = 1000.0
    assert fmt.until(now + 180, now) == "in 3 min"
    assert fmt.until(now + 45, now) == "in 45s"
    assert fmt.until(now + 7200, now) == "in 2 h"
    assert fmt.until(now + 86400, now) == "in 1 day"
    assert fmt.until(now - 5, now) == "overdue 5s"
    assert fmt.until(now + 0.2, now) == "now"
    assert fmt.until(None, now) == "—"


def test_ago_reads_like_speech() -> None:
    assert fmt.ago(990.0, 1000.0) == "10s ago"
    assert fmt.ago(1000.0 - 120, 1000.0) == "2 min ago"
    assert fmt.ago(999.5, 1000.0) == "just now"
    assert fmt.ago(None, 1000.0) == "—"


def test_counts_sizes_rates_and_latency() -> None:
    assert fmt.count(48213) == "48,213"
    assert fmt.size(84 * 1024 * 1024) == "84.0 MiB"
    assert fmt.rate(42.66) == "42.7/s"
    assert fmt.percent(12.345) == "12.3%"
    assert fmt.latency(0.421) == "0.42 ms"
    assert fmt.latency(35.2) == "35 ms"
    assert fmt.latency(None) == "—"


def test_clock_and_timestamp_use_local_time() -> None:
    # The autouse fixture sets TZ=UTC.
    assert time.strftime("%Z") in ("UTC", "GMT")
    assert fmt.clock(1_767_259_800.0) == "09:30:00"
    assert fmt.timestamp(1_767_259_800.0) == "2026-01-01 09:30:00"
    assert fmt.clock(None) == "—"


def test_ids_and_text_are_cut_with_an_ellipsis() -> None:
    assert fmt.short_id("9f1c2d3e-4b5a") == "9f1c2d3e"
    assert fmt.short_id(None) == "—"
    assert fmt.truncate("images.resize", 8) == "images.…"
    assert fmt.truncate("short", 8) == "short"
    assert fmt.truncate("x", 0) == ""


def test_call_repr_drops_empty_parts() -> None:
    assert fmt.call_repr("(1, 2)", "{}") == "(1, 2)"
    assert fmt.call_repr("()", "{'x': 3}") == "{'x': 3}"
    assert fmt.call_repr("()", "{}") == "()"
    assert fmt.call_repr("(1,)", "{'x': 3}") == "(1,) {'x': 3}"


@pytest.mark.parametrize(
    ("age", "level"),
    [
        (None, "ok"),
        (100.0, "ok"),
        (1799.0, "ok"),
        (1800.0, "warn"),
        (3239.0, "warn"),
        (3240.0, "crit"),
        (4000.0, "crit"),
    ],
)
def test_unacked_age_turns_amber_then_red_against_the_visibility_timeout(
    age: float | None, level: str
) -> None:
    assert fmt.age_level(age, 3600.0) == level


def test_bar_fills_in_eighths_and_keeps_its_width() -> None:
    assert fmt.bar(0.0, 4) == "    "
    assert fmt.bar(1.0, 4) == "████"
    assert fmt.bar(0.5, 4) == "██  "
    assert fmt.bar(0.5 + 1 / 32, 4) == "██▏ "
    assert fmt.bar(2.0, 3) == "███"
    assert len(fmt.bar(0.37, 10)) == 10


def test_tables_export_as_csv_and_json() -> None:
    headers = ("Queue", "Ready")
    rows = (("default", "1,204"), ("low, slow", "5"))
    assert fmt.table_csv(headers, rows) == 'Queue,Ready\ndefault,"1,204"\n"low, slow",5\n'
    assert json.loads(fmt.table_json(headers, rows)) == [
        {"Queue": "default", "Ready": "1,204"},
        {"Queue": "low, slow", "Ready": "5"},
    ]
