"""TaskRegistry (name → Task) and the explicit pending list behind ``shared_task``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tq.exceptions import NotRegistered

if TYPE_CHECKING:
    from tq.app.task import Task


class TaskRegistry(dict[str, "Task"]):
    """Registered tasks by name."""

    def __missing__(self, name: str) -> Task:
        raise NotRegistered(name)

    def register(self, task: Task) -> Task:
        self[task.name] = task
        return task

    def names(self) -> list[str]:
        """Sorted user task names (tq's and Celery's built-ins left out)."""
        return sorted(n for n in self if not n.startswith(("celery.", "tq.")))


#: ``shared_task`` definitions waiting for an app: (function, options). Explicit, not magic:
#: every App that is created, or set as default, registers them.
PENDING_SHARED: list[tuple[Callable[..., Any], dict[str, Any]]] = []
