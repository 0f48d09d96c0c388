"""Startup checks of a worker (RELIABILITY.md S14, S15 and the eviction check of T14 (b)).

S14: root (uid, euid, gid or egid 0) → a ``SecurityWarning`` line; root and pickle in
``accept_content`` → the worker refuses to start (exit 1) unless ``C_FORCE_ROOT`` is set, as
Celery does. The ids are injectable (``os.get*id`` monkeypatched in process), so the tests do
not need root; where the suite does run as root, real worker processes are checked too.
S15: a broker that is not loopback, with no password or ACL user and no TLS → a warning.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import pytest
import redis
from tests.faults.harness import Rig

from tq.exceptions import SecurityError
from tq.worker import startup_checks
from tq.worker.runtime import Runtime, RuntimeOptions
from tq.worker.startup_checks import (
    Ids,
    check_privileges,
    eviction_policy,
    eviction_warning,
    exposure_warning,
    run_checks,
)

pytestmark = [pytest.mark.redis]

PICKLE = {"accept_content": ["json", "pickle"]}
EXPOSURE = "is not a loopback address and the connection has no password"


def _as(monkeypatch: pytest.MonkeyPatch, uid: int, gid: int | None = None) -> None:
    gid = uid if gid is None else gid
    monkeypatch.setattr(os, "getuid", lambda: uid)
    monkeypatch.setattr(os, "geteuid", lambda: uid)
    monkeypatch.setattr(os, "getgid", lambda: gid)
    monkeypatch.setattr(os, "getegid", lambda: gid)


# -- S14 ---------------------------------------------------------------------------------------
def test_root_with_pickle_accepted_refuses_to_start(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """In process, uid 0 injected: ``Runtime.run`` returns 1 before forking anything."""
    _as(monkeypatch, 0)
    monkeypatch.delenv("C_FORCE_ROOT", raising=False)
    app = rig.app(settings=PICKLE)
    runtime = Runtime(
        app, RuntimeOptions(pool="solo", concurrency=1, install_signal_handlers=False)
    )
    with caplog.at_level(logging.WARNING):
        assert runtime.run() == 1
    assert runtime.state == "starting" and runtime.controller is None
    text = caplog.text
    assert "Refusing to start" in text and "C_FORCE_ROOT" in text and "uid=0" in text
    assert rig.unacked(app) == 0


@pytest.mark.parametrize(
    ("uid", "gid", "accept", "force", "expect"),
    [
        (0, 0, ["json"], None, "warn"),
        (1000, 0, ["json"], None, "warn"),  # gid 0 counts, as in Celery
        (0, 0, ["json", "application/x-python-serialize"], None, "refuse"),
        (0, 0, ["json", "pickle"], "1", "warn"),
        (0, 0, ["json", "pickle"], "false", "refuse"),
        (1000, 1000, ["json", "pickle"], None, "quiet"),
    ],
)
def test_privilege_check(
    uid: int,
    gid: int,
    accept: list[str],
    force: str | None,
    expect: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {"C_FORCE_ROOT": force} if force is not None else {}
    ids = lambda: Ids(uid, uid, gid, gid)  # noqa: E731
    with caplog.at_level(logging.WARNING, logger=startup_checks.__name__):
        if expect == "refuse":
            with pytest.raises(SecurityError, match="Refusing to start"):
                check_privileges(accept, ids, env)
            return
        warned = check_privileges(accept, ids, env)
    assert warned == (expect == "warn")
    assert ("SecurityWarning: You're running the worker with superuser" in caplog.text) == warned


@pytest.mark.skipif(os.geteuid() != 0, reason="real root only")
def test_real_worker_as_root(rig: Rig) -> None:
    """When the suite runs as root: a worker warns; with pickle accepted it exits 1."""
    w = rig.worker(concurrency=1)
    assert "SecurityWarning: You're running the worker with superuser privileges" in w.output()
    refused = rig.worker(concurrency=1, settings=PICKLE, wait=False)
    assert refused.wait(30) == 1, refused.output()[-3000:]
    assert "Refusing to start" in refused.output()
    assert "Traceback" not in refused.output()
    forced = rig.worker(concurrency=1, settings=PICKLE, env={"C_FORCE_ROOT": "1"})
    assert "SecurityWarning" in forced.output()


# -- S15 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "options", "warns"),
    [
        ("redis://0.0.0.0:6390/0", {}, True),
        ("redis://10.1.2.3:6379/0", {}, True),
        ("redis://redis.internal/0", {}, True),
        ("redis://127.0.0.1:6390/0", {}, False),
        ("redis://127.0.0.2:6390/0", {}, False),
        ("redis://localhost/0", {}, False),
        ("redis://[::1]:6379/0", {}, False),
        ("unix:///run/redis.sock", {}, False),
        ("redis://:secret@10.1.2.3/0", {}, False),
        ("redis://tq:secret@10.1.2.3/0", {}, False),
        ("redis://10.1.2.3/0", {"password": "secret"}, False),
        ("rediss://10.1.2.3/0", {}, False),
        ("sentinel://10.1.2.3:26379;sentinel://10.1.2.4:26379", {}, True),
        ("sentinel://:pw@10.1.2.3:26379", {}, False),
    ],
)
def test_exposure_warning(url: str, options: dict[str, Any], warns: bool) -> None:
    text = exposure_warning(url, options)
    assert (text is not None) == warns, text
    if text:
        assert "no TLS" in text and "rediss://" in text


def test_worker_on_an_exposed_broker_warns_at_startup(rig: Rig, figures: dict[str, object]) -> None:
    """S15 end to end: ``redis://0.0.0.0:<port>`` (reaches the private server, which listens
    on loopback) warns; the same server by 127.0.0.1 does not; a password silences it."""
    exposed_url = f"redis://0.0.0.0:{rig.broker.port}/0"
    exposed = rig.worker(concurrency=1, broker_url=exposed_url)
    lines = [line for line in exposed.output().splitlines() if EXPOSURE in line]
    assert len(lines) == 1, exposed.output()[-3000:]
    assert "broker at 0.0.0.0" in lines[0]
    local = rig.worker(concurrency=1)
    assert EXPOSURE not in local.output()
    secured = rig.server("auth", password="s3cret")
    auth = rig.worker(concurrency=1, broker_url=f"redis://:s3cret@0.0.0.0:{secured.port}/0")
    assert EXPOSURE not in auth.output()
    assert "s3cret" not in auth.output()
    figures.update(row="S15", warning=lines[0])


# -- eviction check: tolerant of disabled CONFIG and ACL-denied INFO (T14 b) ------------------
def test_eviction_policy_read_without_config_and_tolerant_of_acl(rig: Rig) -> None:
    server = rig.server(
        "noconfig", extra=["--maxmemory-policy", "allkeys-lru", "--rename-command", "CONFIG", ""]
    )
    client = server.client()
    assert eviction_policy(client) == "allkeys-lru"  # from INFO; CONFIG does not exist here
    text = eviction_warning("allkeys-lru", "broker", "redis://…")
    assert text is not None and "unacked" in text
    client.acl_setuser(
        "blind", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-info"]
    )
    blind = redis.Redis(port=server.port, username="blind", password="pw", socket_timeout=10)
    assert eviction_policy(blind) is None  # neither INFO nor CONFIG: nothing said, no error
    assert eviction_warning(None, "broker", "x") is None


def test_run_checks_warns_about_this_hosts_clock(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """T17: a host clock 30 s behind the broker's is warned at startup; an accurate one is
    not (the broker's TIME against ``time.time`` of this process)."""
    _as(monkeypatch, 1000)
    app = rig.app()
    with caplog.at_level(logging.WARNING, logger=startup_checks.__name__):
        run_checks(app, lambda: time.time() - 30)
        assert "30" in caplog.text and "behind the broker's" in caplog.text
        caplog.clear()
        run_checks(app, time.time)
    assert "the broker's" not in caplog.text and EXPOSURE not in caplog.text
