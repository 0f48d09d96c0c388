"""Subprocess plumbing shared by ``conftest.py`` and the interop tests: the environment a
worker subprocess gets, waiting until a node answers ``ping``, and stopping a process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tq import App

#: The repository root: subprocesses run here so ``tests.tasks`` imports.
ROOT = Path(__file__).resolve().parents[1]
#: Longest wait for a worker subprocess to answer ``ping`` (seconds).
START_DEADLINE_S = 30.0


def terminate_group(proc: subprocess.Popen[bytes], deadline: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``deadline``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(deadline)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def worker_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(
        TQ_TEST_REDIS_URL=redis_url,
        TQ_BROKER_URL=redis_url,
        TQ_RESULT_BACKEND=redis_url,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def wait_for_ping(app: App, nodename: str, proc: subprocess.Popen[bytes], log: Path,
                  timeout: float = START_DEADLINE_S) -> None:
    """Wait until ``nodename`` answers ``ping`` (fails early if the process exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"worker exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        replies = app.control.inspect(destination=[nodename], timeout=0.5).ping()
        if replies and nodename in replies:
            return
    pytest.fail(f"{nodename} did not answer ping within {timeout} s:\n{log.read_text()[-4000:]}")


