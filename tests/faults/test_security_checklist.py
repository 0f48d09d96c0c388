"""RELIABILITY.md's security checklist, the rows ``test_security.py`` does not cover, against
real worker processes and private redis-servers:

* S3: a least-privilege Redis ACL user (command categories below, ``FLUSH*``, ``CONFIG``,
  ``KEYS``, ``DEBUG`` denied) runs a drain, events, remote control and a warm shutdown with an
  empty ``ACL LOG``; with a permission taken away the worker says which command was refused.
* S4: ``rediss://``: verification on by default (no CA: refused), the CA option makes a worker
  drain over TLS, the hostname is checked, ``CERT_NONE`` works only with a warning.
* S6: ``argsrepr`` / ``kwargsrepr`` replace the real arguments in the worker's log (DEBUG), the
  task events, ``inspect active/reserved(safe=True)`` and ``tq-console inspect``.
* S7: ``result_traceback_limit`` caps the traceback stored with a FAILURE.
* S13: two apps with different ``global_keyprefix`` values on one server, each under an ACL
  user that may only touch its own prefix (``~<prefix>*``, ``&<prefix>*``): every key and
  channel either touches is prefixed (the ACL would refuse anything else), neither consumes the
  other's tasks, reads its results or hears its remote control.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from tests.faults.harness import (
    APP_SPEC,
    ROOT,
    TQ_CONSOLE,
    RedisServer,
    Rig,
    free_port,
    is_answering,
    meta_of,
    publish_many,
    wait_until,
    worker_env,
)

from tq import states
from tq.transport.connection import make_client

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: The least-privilege command set for a tq worker, producer and console (S3): the data types
#: tq uses, pub/sub, scripts, MULTI/EXEC/WATCH, connection and keyspace commands, minus every
#: command Redis files under @dangerous (FLUSHALL, FLUSHDB, CONFIG, KEYS, DEBUG, SHUTDOWN,
#: CLIENT KILL, ...). INFO and TIME are allowed back: read-only, and tq reads the server clock.
ACL_COMMANDS = [
    "-@all", "+@list", "+@hash", "+@sortedset", "+@set", "+@string", "+@pubsub",
    "+@scripting", "+@transaction", "+@connection", "+@keyspace", "-@dangerous", "+info",
    "+time",
]  # fmt: skip


def acl_user(
    server: RedisServer, user: str, password: str, keys: str = "*", channels: tuple[str, ...] = ()
) -> str:
    """Create (or reset) ``user`` with ACL_COMMANDS on keys and channels ``keys`` (plus the
    literal channel patterns ``channels``); returns the broker URL that logs in as it."""
    admin = server.client()
    try:
        admin.execute_command(
            "ACL", "SETUSER", user, "reset", "on", f">{password}",
            f"~{keys}", f"&{keys}", *(f"&{c}" for c in channels), *ACL_COMMANDS,
        )  # fmt: skip
    finally:
        admin.close()
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


def acl_log(server: RedisServer) -> list[dict[str, Any]]:
    admin = server.client()
    try:
        entries = admin.execute_command("ACL", "LOG", "128")
    finally:
        admin.close()
    out = []
    for entry in entries or []:
        if isinstance(entry, dict):
            out.append({_s(k): _s(v) for k, v in entry.items()})
        else:
            it = iter(entry)
            out.append({_s(k): _s(v) for k, v in zip(it, it, strict=False)})
    return out


def pidbox_patterns(prefix: str) -> tuple[str, ...]:
    """The literal channel patterns tq and Celery PSUBSCRIBE under ``global_keyprefix``: the
    pidbox (workers) and the event stream (monitors such as the console and Flower)."""
    return (f"{prefix}:/0.celery.pidbox", f"{prefix}:/0.celeryev/*")


def _s(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


# -- S3 ----------------------------------------------------------------------------------------
@pytest.mark.timeout(150)
def test_least_privilege_acl_user_runs_drain_events_control_and_warm_shutdown(
    rig: Rig, figures: dict[str, object]
) -> None:
    """S3: T01 and T07 (scaled) under an ACL user with ACL_COMMANDS: 0 lost, 0 dup, ping and
    inspect answered, events published, prefetched messages restored on SIGTERM, and the
    server's ACL LOG is empty (no command was refused)."""
    url = acl_user(rig.broker, "tqworker", "tq-acl-pw")
    probe = redis.Redis.from_url(url)
    with pytest.raises(redis.exceptions.NoPermissionError, match="flushall"):
        probe.flushall()
    with pytest.raises(redis.exceptions.NoPermissionError, match="keys"):
        probe.keys("*")
    probe.close()
    rig.broker.client().execute_command("ACL", "LOG", "RESET")
    app = rig.app(broker_url=url)
    worker = rig.worker(broker_url=url, concurrency=2, args=["-E", "--prefetch-multiplier", "10"])
    ids = publish_many(app, "fault.work", 500)
    counts = rig.drain(app, ids, 60)
    assert counts.lost == 0 and counts.dup == 0 and counts.stranded == 0, counts.line()
    assert app.control.inspect(destination=[worker.nodename], timeout=2).stats()
    # T07: SIGTERM with prefetched messages, a second worker drains the rest
    slow = publish_many(app, "fault.work", 30, kwargs={"seconds": 0.5})
    wait_until(lambda: rig.ledger.exec_count() > len(ids), 30, "the slow tasks to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()[-3000:]
    assert "Restoring" in worker.output()
    rig.worker(broker_url=url, concurrency=2)
    counts2 = rig.drain(app, slow, 60)
    assert counts2.lost == 0 and counts2.dup == 0 and counts2.stranded == 0, counts2.line()
    denied = acl_log(rig.broker)
    assert denied == [], denied
    figures.update(
        row="S3",
        acl=" ".join(ACL_COMMANDS),
        drain=counts.figures(),
        warm_shutdown=counts2.figures(),
        acl_log_entries=0,
    )


@pytest.mark.timeout(90)
def test_acl_user_without_script_permission_gets_a_clear_error_naming_the_command(
    rig: Rig, figures: dict[str, object]
) -> None:
    """S3: with EVALSHA/EVAL taken away from the worker's user, the worker logs an error that
    names the refused command (NOPERM … 'evalsha'), and does not spin: at most a few lines in
    10 s, not a reconnect loop."""
    url = acl_user(rig.broker, "tqworker", "tq-acl-pw")
    app = rig.app(broker_url=url)
    worker = rig.worker(broker_url=url, concurrency=1)
    admin = rig.broker.client()
    admin.execute_command("ACL", "SETUSER", "tqworker", "-evalsha", "-eval")
    admin.close()
    publish_many(app, "fault.work", 5)

    def refused() -> list[str]:
        return [ln for ln in worker.output().splitlines() if "'evalsha'" in ln]

    wait_until(refused, 30, "an error naming evalsha")
    first = len(refused())
    time.sleep(10.0)  # observe the rate of repeats
    lines = refused()
    assert worker.is_alive(), worker.output()[-3000:]
    assert "Traceback" not in worker.output(), worker.output()[-3000:]
    assert len(lines) - first <= 10, "\n".join(lines[-20:])
    figures.update(
        row="S3",
        refused="evalsha",
        more_lines_in_10s=len(lines) - first,
        first_line=lines[0].split("] ", 1)[-1][:300],
    )


# -- S4 ----------------------------------------------------------------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(directory: Path, san: str) -> dict[str, str]:
    """A throwaway CA and a server certificate for ``san`` signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=tq-ca"
    _openssl(*ca.split(), cwd=directory)
    server = "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=tq-server"
    _openssl(*server.split(), cwd=directory)
    (directory / "san.ext").write_text(f"subjectAltName={san}\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext",
             cwd=directory)  # fmt: skip
    return {name: str(directory / name) for name in ("ca.crt", "server.crt", "server.key")}


@pytest.fixture
def tls_broker(rig: Rig) -> Iterator[tuple[int, dict[str, str]]]:
    """The rig's broker restarted with a TLS port beside its plain one (the plain port stays
    for the harness's readiness checks and the drain counts). The certificate names only
    ``IP:127.0.0.1``."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make certificates")
    certs = make_certs(rig.tmp / "certs", "IP:127.0.0.1")
    tls_port = free_port()
    rig.broker.stop()
    rig.broker.extra += [
        "--tls-port", str(tls_port), "--tls-cert-file", certs["server.crt"],
        "--tls-key-file", certs["server.key"], "--tls-ca-cert-file", certs["ca.crt"],
        "--tls-auth-clients", "no",
    ]  # fmt: skip
    try:
        rig.broker.start()
    except AssertionError as exc:
        if "tls" in str(exc).lower():
            pytest.skip(f"this redis-server has no TLS support: {exc}")
        raise
    yield tls_port, certs


@pytest.mark.timeout(120)
def test_rediss_verifies_certificates_by_default_and_warns_on_cert_none(
    rig: Rig,
    tls_broker: tuple[int, dict[str, str]],
    caplog: pytest.LogCaptureFixture,
    figures: dict[str, object],
) -> None:
    """S4: without the CA the connection is refused (certificate verify failed); with
    ``ssl_ca_certs`` a worker drains 200 tasks over TLS; ``localhost`` (not in the
    certificate) fails the hostname check; ``ssl_cert_reqs=CERT_NONE`` connects and logs the
    warning, the default logs none."""
    port, certs = tls_broker
    url = f"rediss://127.0.0.1:{port}/0"
    caplog.set_level(logging.WARNING, logger="tq.transport.connection")
    no_ca = make_client(url, {"socket_timeout": 5})
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        no_ca.ping()
    no_ca.close()
    wrong_host = make_client(
        f"rediss://localhost:{port}/0", {"ssl_ca_certs": certs["ca.crt"], "socket_timeout": 5}
    )
    with pytest.raises(redis.ConnectionError, match=r"match|hostname|IP address mismatch"):
        wrong_host.ping()
    wrong_host.close()
    assert not [r for r in caplog.records if "verification is OFF" in r.getMessage()]
    unverified = make_client(url, {"ssl_cert_reqs": "none", "socket_timeout": 5})
    assert unverified.ping()
    unverified.close()
    warnings = [r.getMessage() for r in caplog.records if "verification is OFF" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    transport = {"ssl_ca_certs": certs["ca.crt"]}
    app = rig.app(broker_url=url, transport=transport)
    rig.worker(broker_url=url, transport=transport, concurrency=2)
    ids = publish_many(app, "fault.work", 200)
    counts = rig.drain(app, ids, 60)
    assert counts.lost == 0 and counts.dup == 0 and counts.stranded == 0, counts.line()
    res = app.send_task("fault.echo", args=(1, 2))
    assert res.get(timeout=30) == 2
    figures.update(
        row="S4",
        without_ca="refused: certificate verify failed",
        wrong_hostname="refused",
        cert_none_warning=warnings[0],
        over_tls=counts.figures(),
    )


# -- S6 ----------------------------------------------------------------------------------------
@pytest.fixture
def channel_tap(rig: Rig) -> Iterator[list[tuple[str, bytes]]]:
    """Every pub/sub message on the rig's broker: (channel, data)."""
    client = rig.broker.client(socket_timeout=None)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("*")
    seen: list[tuple[str, bytes]] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                msg = pubsub.get_message(timeout=0.2)
            except redis.RedisError:
                return
            if msg and msg["type"] == "pmessage":
                seen.append((_s(msg["channel"]), msg["data"]))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield seen
    stop.set()
    thread.join(5)
    pubsub.close()
    client.close()


def _unwrap(data: bytes) -> str:
    """A pub/sub payload with any base64 kombu body decoded beside it (events, replies)."""
    text = data.decode("utf-8", "replace")
    with contextlib.suppress(ValueError, KeyError, TypeError):
        body = json.loads(text)["body"]
        text += base64.b64decode(body).decode("utf-8", "replace")
    return text


def _cli_inspect(rig: Rig, command: str, node: str) -> str:
    url = rig.broker.url()
    out = subprocess.run(
        [TQ_CONSOLE, "-A", APP_SPEC, "-b", url, "inspect", command, "-d", node, "-t", "3",
         "--json"],
        cwd=ROOT, env=worker_env(url, rig.ledger_server.url()), capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr


@pytest.mark.timeout(120)
def test_argsrepr_and_kwargsrepr_replace_secrets_in_logs_events_and_inspect(
    rig: Rig, channel_tap: list[tuple[str, bytes]], figures: dict[str, object]
) -> None:
    """S6: a task sent with ``argsrepr``/``kwargsrepr`` carries a secret in args and kwargs.
    The worker's DEBUG log, every event and control reply on the broker, ``inspect
    active/reserved`` with ``safe=True`` and ``tq-console inspect active/reserved`` show the
    reprs, never the secret. (``inspect`` without ``safe``, like Celery's, returns the decoded
    arguments; the message body itself still carries them, as in Celery.)"""
    secret = f"S3CRET-{uuid.uuid4().hex}"
    app = rig.app()
    worker = rig.worker(concurrency=1, args=["-E"], loglevel="DEBUG")
    options = {"argsrepr": "('<redacted>',)", "kwargsrepr": "{'token': '<redacted>'}"}
    first = app.send_task(
        "fault.secret", args=(secret,), kwargs={"seconds": 4.0, "token": secret}, **options
    )
    second = app.send_task("fault.secret", args=(secret,), kwargs={"token": secret}, **options)
    wait_until(lambda: rig.ledger.exec_of(first.id) == 1, 30, "the first task to start")
    insp = app.control.inspect(destination=[worker.nodename], timeout=2)
    active = insp.active(safe=True) or {}
    reserved = insp.reserved(safe=True) or {}
    cli_active = _cli_inspect(rig, "active", worker.nodename)
    cli_reserved = _cli_inspect(rig, "reserved", worker.nodename)
    unsafe = insp.active() or {}
    wait_until(lambda: rig.ledger.done_of(second.id) == 1, 30, "both tasks")
    wait_until(
        lambda: sum(b"task-succeeded" in _unwrap(d).encode() for _, d in channel_tap) >= 2,
        10,
        "both task-succeeded events",
    )
    events = "\n".join(_unwrap(d) for _, d in channel_tap)
    texts = {
        "worker log (DEBUG)": worker.output(),
        "events and replies on the broker": events,
        "inspect active(safe=True)": json.dumps(active),
        "inspect reserved(safe=True)": json.dumps(reserved),
        "tq-console inspect active": cli_active,
        "tq-console inspect reserved": cli_reserved,
    }
    leaks = [where for where, text in texts.items() if secret in text]
    assert leaks == [], leaks
    assert "<redacted>" in json.dumps(active) and "<redacted>" in cli_active
    assert "task-received" in events and "<redacted>" in events
    figures.update(
        row="S6",
        places_checked=sorted(texts),
        leaks=0,
        unsafe_inspect_shows_real_args=secret in json.dumps(unsafe),
    )


# -- S7 ----------------------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_result_traceback_limit_caps_the_stored_traceback(
    rig: Rig, figures: dict[str, object]
) -> None:
    """S7: with ``result_traceback_limit=200`` a FAILURE's stored traceback is at most 200
    characters (the tail, which names the exception); without it the whole traceback is
    stored, as in Celery. The exception message itself is stored either way."""
    settings = {"result_traceback_limit": 200}
    message = "password=hunter2"
    plain = rig.app()
    limited = rig.app(settings=settings)
    w1 = rig.worker(concurrency=1)
    full = plain.send_task("fault.leak", args=(message,))
    wait_until(lambda: plain.AsyncResult(full.id).state == states.FAILURE, 30, "FAILURE")
    w1.signal(signal.SIGTERM)
    w1.wait(30)
    rig.worker(concurrency=1, settings=settings)
    capped = limited.send_task("fault.leak", args=(message,))
    wait_until(lambda: limited.AsyncResult(capped.id).state == states.FAILURE, 30, "FAILURE")
    full_tb = meta_of(plain, full.id)["traceback"] or ""
    capped_meta = meta_of(limited, capped.id)
    capped_tb = capped_meta["traceback"] or ""
    assert "deeper" in full_tb and len(full_tb) > 200
    assert 0 < len(capped_tb) <= 200 and capped_tb.rstrip().endswith(f"ValueError: {message}")
    figures.update(
        row="S7",
        full_traceback_chars=len(full_tb),
        limited_traceback_chars=len(capped_tb),
        message_in_result=message in json.dumps(capped_meta["result"]),
    )


@pytest.mark.timeout(60)
def test_result_traceback_limit_zero_stores_no_traceback(rig: Rig) -> None:
    """S7: ``result_traceback_limit=0`` should store no traceback at all."""
    settings = {"result_traceback_limit": 0}
    app = rig.app(settings=settings)
    rig.worker(concurrency=1, settings=settings)
    res = app.send_task("fault.leak", args=("password=hunter2",))
    wait_until(lambda: app.AsyncResult(res.id).state == states.FAILURE, 30, "FAILURE")
    assert not meta_of(app, res.id)["traceback"]


# -- S13 ---------------------------------------------------------------------------------------
@pytest.mark.timeout(150)
def test_two_prefixes_on_one_server_never_cross_consume_or_cross_control(
    rig: Rig, channel_tap: list[tuple[str, bytes]], figures: dict[str, object]
) -> None:
    """S13: tenants A and B (``global_keyprefix`` ``tenantA:`` / ``tenantB:``), each worker,
    producer and backend logged in as an ACL user allowed only ``~tenantX:*`` keys and
    ``&tenantX:*`` channels, events on. A's worker never runs B's tasks (they wait until B's
    worker starts), B's ping and shutdown do not reach A, B cannot read A's results, every key
    on the server is prefixed, every channel used is prefixed, and ``ACL LOG`` is empty."""
    tenants: dict[str, dict[str, Any]] = {}
    for name in ("tenantA", "tenantB"):
        url = acl_user(rig.broker, name.lower(), f"{name}-pw", keys=f"{name}:*")
        transport = {"global_keyprefix": f"{name}:"}
        tenants[name] = {
            "url": url,
            "transport": transport,
            "app": rig.app(broker_url=url, transport=transport),
        }
    a, b = tenants["tenantA"], tenants["tenantB"]
    # PSUBSCRIBE patterns are checked literally against the ACL's channel patterns, so
    # ``&tenantA:*`` does not admit the pidbox subscription: the control thread is refused,
    # says so, keeps retrying, and serves once the pattern is added
    wa = rig.worker(
        name="tenanta", broker_url=a["url"], transport=a["transport"], args=["-E"], wait=False
    )
    wait_until(lambda: "Remote control subscription refused" in wa.output(), 30, "the NOPERM line")
    for name in tenants:
        acl_user(rig.broker, name.lower(), f"{name}-pw", keys=f"{name}:*",
                 channels=pidbox_patterns(name))  # fmt: skip
    rig.wait_ready(wa, a["app"])
    assert "Remote control subscription restored" in wa.output()
    assert "Traceback" not in wa.output()
    rig.broker.client().execute_command("ACL", "LOG", "RESET")
    ids_b = publish_many(b["app"], "fault.work", 20)
    ids_a = publish_many(a["app"], "fault.work", 20)
    result_a = a["app"].send_task("fault.echo", args=(1,))
    wait_until(lambda: rig.ledger.all_done(ids_a), 30, "A's tasks")
    assert result_a.get(timeout=30) == 1
    assert sum(rig.ledger.execs(ids_b)) == 0
    assert b["app"].transport.queue_length("celery") == 20
    # cross-control: B's broadcast reaches nobody; B cannot see A's result
    assert not b["app"].control.inspect(timeout=1).ping()
    b["app"].control.broadcast("shutdown")
    assert b["app"].AsyncResult(result_a.id).state == states.PENDING
    assert is_answering(a["app"], wa.nodename, timeout=2)
    wb = rig.worker(name="tenantb", broker_url=b["url"], transport=b["transport"], args=["-E"])
    wait_until(lambda: rig.ledger.all_done(ids_b), 30, "B's tasks")
    assert set(a["app"].control.inspect(timeout=1).ping() or {}) == {wa.nodename}
    assert set(b["app"].control.inspect(timeout=1).ping() or {}) == {wb.nodename}
    admin = rig.broker.client()
    keys = sorted(_s(k) for k in admin.scan_iter("*", count=1000))
    admin.close()
    unprefixed_keys = [k for k in keys if not k.startswith(("tenantA:", "tenantB:"))]
    channels = sorted({c for c, _ in channel_tap})
    unprefixed_channels = [c for c in channels if not c.startswith(("tenantA:", "tenantB:"))]
    denied = acl_log(rig.broker)
    assert unprefixed_keys == [], unprefixed_keys
    assert unprefixed_channels == [], unprefixed_channels
    assert any("pidbox" in c for c in channels) and any("celeryev" in c for c in channels)
    assert denied == [], denied
    assert wa.is_alive() and wb.is_alive()
    figures.update(
        row="S13",
        keys_seen=len(keys),
        channels_seen=channels,
        acl_log_entries=0,
        cross_runs=0,
    )
