"""Extra tasks for the T19/T26/T27/T29/T30 rows, registered on the fault suite's app.

A worker loads them with ``rig.worker(args=["-A", ROW_APP])``: click keeps the last ``-A``,
so the worker imports this module, which imports ``tests.faults.fault_tasks`` (every
ordinary fault task) and adds the tasks below to the same ``app``. Producers send them by
name (``app.send_task``), so the test process needs no registration.
"""

from __future__ import annotations

from tests.faults.fault_tasks import app, finished, started

from tq import Task

#: The ``-A`` value that loads these tasks.
ROW_APP = "tests.faults.row_tasks:app"

MB = 1024 * 1024


def big_result(self: Task, mb: int = 50) -> str:
    """Count, then return a string of ``mb`` MiB (T30)."""
    started(self.request.id)
    value = "x" * (mb * MB)
    finished(self.request.id)
    return value


def big_failure(self: Task, mb: int = 50) -> None:
    """Count, then raise an exception whose message is ``mb`` MiB (T30's failure side: the
    traceback text comes back to the controller through the pool pipe)."""
    started(self.request.id)
    finished(self.request.id)
    raise ValueError("y" * (mb * MB))


app.task(name="fault.big_result", bind=True)(big_result)
app.task(name="fault.big_failure", bind=True)(big_failure)
