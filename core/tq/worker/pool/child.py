"""The child process's main loop: read a job, call the target, write the outcome.

Signals: SIGINT is ignored (the controller decides when children stop); SIGUSR1 raises
``SoftTimeLimitExceeded`` inside the running job; SIGTERM and SIGKILL end the process.
A child leaves after ``max_tasks`` jobs or when its RSS passes ``max_memory_kib``, *after*
reporting its last outcome, so recycling never loses a job.
"""

from __future__ import annotations

import logging
import os
import signal
from multiprocessing.connection import Connection
from typing import Any

from tq.exceptions import SoftTimeLimitExceeded
from tq.worker.pool import ipc, resolve

logger = logging.getLogger(__name__)

#: How often (seconds) an idle child checks that the worker that forked it is still alive.
PARENT_CHECK_S = 1.0


def _raise_soft_limit(signum: int, frame: Any) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")


def _over_memory(limit_kib: int | None) -> bool:
    if not limit_kib:
        return False
    import psutil

    return bool(psutil.Process().memory_info().rss > limit_kib * 1024)


def child_main(
    conn: Connection,
    initializer: str,
    initargs: tuple[Any, ...],
    target: str,
    max_tasks: int | None,
    max_memory_kib: int | None,
) -> None:
    """Run jobs from ``conn`` until told to stop, the pipe closes, or it is time to recycle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGUSR1, _raise_soft_limit)
    parent = os.getppid()
    ctx = resolve(initializer)(*initargs)
    run = resolve(target)
    done = 0
    while True:
        try:
            # Siblings hold copies of the supervisor's pipe ends, so EOF alone cannot tell
            # us that the worker died: check who our parent is while idle.
            while not conn.poll(PARENT_CHECK_S):
                if os.getppid() != parent:
                    logger.warning("Worker process %d is gone; pool child exits", parent)
                    os._exit(0)
            data = conn.recv_bytes()
        except (EOFError, OSError):
            break
        except SoftTimeLimitExceeded:  # a late signal between jobs
            continue
        if data == ipc.STOP:
            break
        job_id, payload = ipc.loads(data)
        try:
            value = run(ctx, payload)
        except SoftTimeLimitExceeded as exc:  # raised outside the target's own handling
            value = ("error", repr(exc))
        except BaseException as exc:  # the target must not kill the loop
            logger.exception("pool target raised")
            value = ("error", repr(exc))
        done += 1
        exiting = bool(max_tasks and done >= max_tasks) or _over_memory(max_memory_kib)
        try:
            conn.send_bytes(ipc.dumps((job_id, value, exiting)))
        except (OSError, BrokenPipeError):
            break
        if exiting:
            break
    conn.close()
    os._exit(0)  # skip atexit handlers inherited from the parent
