"""Pure text formatting shared by the console's widgets and screens.

Ages, durations, ETAs, rates, sizes, counts, bars and table exports, on top of ``humanize``.
Every function here is pure: times are passed in (the snapshot's ``taken_at`` is "now"), so the
same snapshot always renders the same text. This module imports nothing from tq, Textual or Rich.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from typing import Literal

import humanize

#: Fraction of the visibility timeout at which an unacked age turns amber.
AGE_WARN_FRACTION = 0.5
#: Fraction of the visibility timeout at which an unacked age turns red.
AGE_CRIT_FRACTION = 0.9
#: Placeholder shown for a missing value.
NONE = "—"
#: The multiplication sign, as in the "prefork x4" of the status line.
TIMES = "\N{MULTIPLICATION SIGN}"

Level = Literal["ok", "warn", "crit"]

# humanize's words, shortened so they fit a table column.
_SHORT_WORDS = (
    ("a moment", "now"),
    ("a second", "1s"),
    (" seconds", "s"),
    (" second", "s"),
    ("a minute", "1 min"),
    (" minutes", " min"),
    (" minute", " min"),
    ("an hour", "1 h"),
    (" hours", " h"),
    (" hour", " h"),
    ("a day", "1 day"),
    ("a month", "1 month"),
    ("a year", "1 year"),
)
# Eighths of a block, for smooth bars.
_BLOCKS = " ▏▎▍▌▋▊▉█"


def compact_delta(seconds: float) -> str:
    """Say how long ``seconds`` is, the way a person would, in few characters.

    Args:
        seconds: A length of time; the sign is ignored.

    Returns:
        ``"12s"``, ``"3 min"``, ``"2 h"``, ``"4 days"`` or ``"now"``.
    """
    text: str = humanize.naturaldelta(abs(seconds))
    for long, short in _SHORT_WORDS:
        text = text.replace(long, short)
    return text


def ago(then: float | None, now: float) -> str:
    """``"12s ago"`` for a past Unix time, as seen at ``now``."""
    if then is None:
        return NONE
    delta = now - then
    if delta < 1:
        return "just now"
    return f"{compact_delta(delta)} ago"


def until(due: float | None, now: float) -> str:
    """``"in 3 min"`` for a future Unix time, ``"overdue 4s"`` for a past one."""
    if due is None:
        return NONE
    delta = due - now
    if abs(delta) < 1:
        return "now"
    if delta < 0:
        return f"overdue {compact_delta(delta)}"
    return f"in {compact_delta(delta)}"


def duration(seconds: float | None) -> str:
    """A precise, short duration: ``"350ms"``, ``"12.3s"``, ``"3m 05s"``, ``"2h 03m"``."""
    if seconds is None:
        return NONE
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"


def clock(moment: float | None) -> str:
    """Local wall-clock time of day, ``"14:03:07"``."""
    if moment is None:
        return NONE
    return time.strftime("%H:%M:%S", time.localtime(moment))


def timestamp(moment: float | None) -> str:
    """Local date and time, ``"2026-01-01 14:03:07"``."""
    if moment is None:
        return NONE
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))


def count(number: int) -> str:
    """A count with thousands separators: ``"48,213"``."""
    return str(humanize.intcomma(number))


def rate(per_second: float) -> str:
    """A throughput: ``"42.7/s"``."""
    return f"{per_second:.1f}/s"


def size(nbytes: int) -> str:
    """A memory size in binary units: ``"84.0 MiB"``."""
    return str(humanize.naturalsize(nbytes, binary=True, format="%.1f"))


def percent(value: float) -> str:
    """``"12.5%"``."""
    return f"{value:.1f}%"


def latency(ms: float | None) -> str:
    """A round-trip time in milliseconds: ``"0.42 ms"``."""
    if ms is None:
        return NONE
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.0f} ms"


def short_id(task_id: str | None, width: int = 8) -> str:
    """The first ``width`` characters of an id, which is how people quote them."""
    if not task_id:
        return NONE
    return task_id[:width]


def truncate(text: str, width: int) -> str:
    """Cut ``text`` to ``width`` characters, ending with an ellipsis when cut."""
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def call_repr(args_repr: str, kwargs_repr: str) -> str:
    """One line for a task's arguments: ``"(1, 2) {'x': 3}"`` without the empty parts."""
    parts = [part for part in (args_repr, kwargs_repr) if part not in ("", "()", "{}", "[]")]
    return " ".join(parts) if parts else "()"


def age_level(age: float | None, visibility_timeout: float) -> Level:
    """How worrying an unacked age is, relative to the visibility timeout.

    Past :data:`AGE_WARN_FRACTION` of the timeout it is ``"warn"``, past
    :data:`AGE_CRIT_FRACTION` it is ``"crit"``: the message will soon be restored and may run twice.
    """
    if age is None or visibility_timeout <= 0:
        return "ok"
    fraction = age / visibility_timeout
    if fraction >= AGE_CRIT_FRACTION:
        return "crit"
    if fraction >= AGE_WARN_FRACTION:
        return "warn"
    return "ok"


def bar(fraction: float, width: int) -> str:
    """A horizontal bar ``width`` cells wide, filled to ``fraction`` in eighths of a cell."""
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, rest = divmod(eighths, 8)
    text = "█" * full + (_BLOCKS[rest] if rest else "")
    return text.ljust(width)


def table_csv(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table as CSV text, header first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return buffer.getvalue()


def table_json(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table as a JSON list of objects keyed by column header."""
    records = [dict(zip(headers, row, strict=False)) for row in rows]
    return json.dumps(records, indent=2, ensure_ascii=False) + "\n"
