"""``ActionTable``: the operators' action log kept by the runtime, shown newest first.

Entries are dicts from ``Runtime.action_log()``; the keys read are ``time`` (Unix seconds),
``who``, ``what`` and ``outcome``, and unknown keys are ignored. Fed by ``update``; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tq_console import format as fmt
from tq_console.widgets import _palette
from tq_console.widgets.keyed_table import Cell, Column, KeyedTable


def _as_time(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class ActionTable(KeyedTable):
    """Actions: when, who, what and the outcome."""

    COLUMNS = (
        Column("time", "When", 19, sort_key="W"),
        Column("who", "Who", 18, sort_key="O"),
        Column("what", "Action", 32, sort_key="A"),
        Column("outcome", "Outcome", 16, flex=True),
    )

    def update(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Show ``entries`` (in any order) newest at the top."""
        rows = []
        seen: dict[str, int] = {}
        timed = [(_as_time(entry.get("time", entry.get("ts"))), entry) for entry in entries]
        timed.sort(key=lambda pair: pair[0] if pair[0] is not None else float("-inf"), reverse=True)
        for moment, entry in timed:
            outcome = str(entry.get("outcome", ""))
            failed = outcome.lower().startswith(("fail", "error"))
            identity = f"{moment}|{entry.get('who', '')}|{entry.get('what', '')}"
            seen[identity] = seen.get(identity, 0) + 1  # the same action twice in one instant
            rows.append(
                (
                    f"{identity}|{seen[identity]}",
                    [
                        Cell(fmt.timestamp(moment), _palette.DIM, sort=moment),
                        Cell(str(entry.get("who", "")), _palette.INFO),
                        Cell(str(entry.get("what", "")), "bold"),
                        Cell(outcome, _palette.CRIT if failed else _palette.OK),
                    ],
                )
            )
        self.sync(rows)
