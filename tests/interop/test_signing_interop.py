"""Message signing against real Celery 5 (RELIABILITY.md S9), both directions.

* A Celery client with ``setup_security`` sends a signed task; a tq worker verifies and runs it.
* A tq client with ``setup_security`` sends a signed task; a ``celery worker`` with security
  set up verifies and runs it.

Each side signs with its own key; the shared store holds both certificates. Celery runs in
subprocesses only, because its ``setup_security`` changes kombu's process-wide registry.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests._certs import Identity, make_identity, make_store
from tests._processes import ROOT, terminate_group, worker_env

from tq import App
from tq.protocol import signing
from tq.worker.runtime import Runtime

pytestmark = [pytest.mark.interop, pytest.mark.redis]

RESULT_TIMEOUT_S = 30.0


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Identity, Identity, Path]:
    tq_id = make_identity(tmp_path / "keys", "tq-side")
    celery_id = make_identity(tmp_path / "keys", "celery-side")
    return tq_id, celery_id, make_store(tmp_path / "store", tq_id, celery_id)


@pytest.fixture
def secure_app(
    make_app: Callable[..., App], pki: tuple[Identity, Identity, Path]
) -> Iterator[App]:
    tq_id, _celery_id, store = pki
    app = make_app(security_key=str(tq_id.key), security_certificate=str(tq_id.cert),
                   security_cert_store=str(store))
    app.setup_security()
    yield app
    signing.unregister()


def _celery_env(redis_url: str, pki: tuple[Identity, Identity, Path]) -> dict[str, str]:
    _tq_id, celery_id, store = pki
    return worker_env(redis_url, TQ_TEST_SECURITY_KEY=str(celery_id.key),
                      TQ_TEST_SECURITY_CERT=str(celery_id.cert),
                      TQ_TEST_SECURITY_STORE=str(store))


def test_celery_signed_task_runs_on_a_tq_worker(
    secure_app: App, runtime: Callable[..., Runtime], redis_url: str,
    pki: tuple[Identity, Identity, Path],
) -> None:
    runtime(app=secure_app)
    out = subprocess.run(
        [sys.executable, "-m", "tests.interop.celery_auth_app", "tests.add", "20", "22"],
        cwd=ROOT, env=_celery_env(redis_url, pki), capture_output=True, text=True,
        timeout=RESULT_TIMEOUT_S + 15,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    reply = json.loads(out.stdout.strip().splitlines()[-1])
    assert reply["result"] == 42
    assert secure_app.AsyncResult(reply["id"]).state == "SUCCESS"


def test_tq_signed_task_runs_on_a_secured_celery_worker(
    secure_app: App, redis_url: str, pki: tuple[Identity, Identity, Path], tmp_path: Path,
) -> None:
    nodename = f"celery{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    log = tmp_path / "celery-worker.log"
    celery = Path(sys.executable).parent / "celery"
    cmd = [str(celery), "-A", "tests.interop.celery_auth_app", "worker", "-P", "solo", "-c", "1",
           "--without-mingle", "--without-gossip", "--without-heartbeat", "-n", nodename,
           "-l", "INFO"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_celery_env(redis_url, pki), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        result = secure_app.send_task("tests.add", (2, 3))
        try:
            value = result.get(timeout=RESULT_TIMEOUT_S)
        except Exception as exc:
            pytest.fail(f"no result from the Celery worker ({exc!r}):\n{log.read_text()[-4000:]}")
        assert value == 5
        assert result.state == "SUCCESS"
    finally:
        terminate_group(proc)
