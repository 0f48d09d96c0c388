"""Colours for table cells and meters, shared by the widgets (Rich styles, not Textual CSS).

Cells are Rich ``Text``, so they cannot use the theme's CSS variables; these are chosen to match
Textual's dark theme. Imports only ``tq.states``.
"""

from __future__ import annotations

from tq import states

OK = "#4EBF71"
WARN = "#FFA62B"
CRIT = "#F0506E"
INFO = "#4FC3F7"
BLUE = "#6CA0F6"
MAGENTA = "#C792EA"
DIM = "#7F8C98"
TEXT = "#E0E0E0"
MARK = "bold #FF79C6"

#: Style of a snapshot level from ``format.age_level``.
LEVEL = {"ok": OK, "warn": f"bold {WARN}", "crit": f"bold {CRIT}"}

#: Style and glyph of each task state; SCHEDULED is the console's name for ETA tasks.
TASK_STATE = {
    states.STARTED: (f"bold {INFO}", "▶"),
    states.RECEIVED: (BLUE, "◆"),
    "SCHEDULED": (MAGENTA, "◷"),
    states.PENDING: (DIM, "·"),
    states.SUCCESS: (OK, "✔"),
    states.FAILURE: (f"bold {CRIT}", "✘"),
    states.RETRY: (WARN, "↻"),
    states.REVOKED: (DIM, "⊘"),
    states.REJECTED: (WARN, "⊗"),
    states.IGNORED: (DIM, "\N{EN DASH}"),
}

#: Style and glyph of each pool child state.
CHILD_STATE = {
    "busy": (f"bold {OK}", "●"),
    "idle": (DIM, "○"),
    "starting": (INFO, "◌"),
    "retiring": (MAGENTA, "◐"),
    "dead": (f"bold {CRIT}", "✘"),
}


def event_style(event_type: str) -> str:
    """The style of a Celery event type such as ``task-failed``."""
    if event_type.endswith(("failed", "rejected", "offline")):
        return f"bold {CRIT}"
    if event_type.endswith(("retried", "revoked")):
        return WARN
    if event_type.endswith(("succeeded", "online")):
        return OK
    if event_type.endswith("started"):
        return INFO
    if event_type.startswith("worker"):
        return DIM
    return BLUE
