"""The testable items of RELIABILITY.md's security checklist against real worker processes:
S1 (pickle refused before any deserializer runs), S2 (stored exceptions never import or call
what they name), S5 (a broker password never printed), S8 (control allow-list and signed
control), S12 (a task name never imports anything)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from tests.faults.harness import (
    APP_SPEC,
    ROOT,
    TQ_CONSOLE,
    Rig,
    is_answering,
    meta_of,
    wait_until,
    worker_env,
)

from tq import states
from tq.backend.meta import TASK_KEY_PREFIX
from tq.protocol.message import TaskSpec, build_task

pytestmark = [pytest.mark.redis, pytest.mark.slow]


class _Touch:
    """Unpickling this creates the file at ``path`` (proof that a deserializer ran)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def _good_task_runs(rig: Rig, app: object) -> None:
    res = app.send_task("fault.echo")  # type: ignore[attr-defined]
    wait_until(lambda: rig.ledger.done_of(res.id) == 1, 30, "a good task")


def test_pickle_message_is_refused_before_unpickling_and_dead_lettered(
    rig: Rig, tmp_path: Path, figures: dict[str, object]
) -> None:
    """S1: a pickle body whose unpickling would create a file: refused with "Refusing to
    deserialize untrusted content", dead-lettered, the file never appears, worker stays up."""
    marker = tmp_path / "unpickled"
    app = rig.app()
    worker = rig.worker(concurrency=1)
    _tag, text = build_task(
        TaskSpec(name="fault.echo", id=str(uuid.uuid4()), args=(1,), serializer="json")
    )
    env = json.loads(text)
    import base64

    env["body"] = base64.b64encode(pickle.dumps(((_Touch(marker),), {}, {}))).decode()
    env["content-type"] = "application/x-python-serialize"
    env["content-encoding"] = "binary"
    rig.broker.client().lpush(app.transport.keys.queue("celery", 0), json.dumps(env))
    wait_until(lambda: rig.dead(app), 30, "the pickle message in tq.dead")
    ((meta, _raw),) = rig.dead(app)
    assert meta["reason"].startswith(
        "Refusing to deserialize untrusted content of type application/x-python-serialize"
    )
    _good_task_runs(rig, app)
    assert "Refusing to deserialize untrusted content" in worker.output()
    assert not marker.exists()
    figures.update(
        row="S1", refused=True, deserializer_ran=marker.exists(), dead_reason=meta["reason"][:80]
    )


def test_pickle_result_is_not_unpickled_by_the_reader(rig: Rig, tmp_path: Path) -> None:
    """S1 (results): a pickled meta planted in the backend is a decode error for the reader,
    never unpickled."""
    marker = tmp_path / "unpickled-result"
    app = rig.app()
    task_id = str(uuid.uuid4())
    rig.broker.client().set(f"{TASK_KEY_PREFIX}{task_id}", pickle.dumps(_Touch(marker)))
    with pytest.raises(Exception):  # noqa: B017 - any error; what matters is below
        app.AsyncResult(task_id).get(timeout=2)
    assert not marker.exists()


def test_source_unpickles_broker_data_only_behind_accept_content() -> None:
    """S1: the only ``pickle.loads`` calls are the serializer gated by accept_content and
    the pool's own parent-child pipe."""
    hits = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "core").rglob("*.py")
        if "pickle.loads" in p.read_text("utf-8")
    )
    assert hits == ["core/tq/protocol/serializers.py", "core/tq/worker/pool/ipc.py"]


@pytest.mark.parametrize(
    ("exc_module", "exc_type"),
    [
        ("os", "system"),
        ("tests.faults.canary", "CanaryError"),
        ("subprocess", "call"),
        ("builtins", "eval"),
    ],
)
def test_stored_exception_never_imports_or_calls_what_it_names(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc_module: str, exc_type: str
) -> None:
    """S2: a FAILURE naming ``os.system`` (or a module that must not be imported) comes back
    as a generic RemoteError: nothing imported, nothing executed."""
    marker = tmp_path / "executed"
    canary = tmp_path / "imported"
    monkeypatch.setenv("FAULT_CANARY", str(canary))
    sys.modules.pop("tests.faults.canary", None)
    app = rig.app()
    task_id = str(uuid.uuid4())
    meta: dict[str, object] = {
        "status": states.FAILURE,
        "task_id": task_id,
        "traceback": None,
        "children": [],
        "date_done": None,
        "result": {
            "exc_type": exc_type,
            "exc_module": exc_module,
            "exc_message": [f"touch {marker}"],
        },
    }
    rig.broker.client().set(f"{TASK_KEY_PREFIX}{task_id}", json.dumps(meta))
    with pytest.raises(Exception) as caught:
        app.AsyncResult(task_id).get(timeout=2)
    assert type(caught.value).__name__ == "RemoteError", caught.value
    assert not marker.exists() and not canary.exists()
    assert "tests.faults.canary" not in sys.modules


def test_task_named_os_system_is_not_registered_and_imports_nothing(
    rig: Rig, tmp_path: Path, figures: dict[str, object]
) -> None:
    """S12: task names ``os.system`` and ``tests.faults.canary.run``: FAILURE NotRegistered,
    dead-lettered, nothing imported or executed; the worker keeps serving."""
    marker = tmp_path / "executed"
    canary = tmp_path / "imported"
    app = rig.app()
    worker = rig.worker(concurrency=1, env={"FAULT_CANARY": str(canary)})
    sent = [
        app.send_task("os.system", args=(f"touch {marker}",)),
        app.send_task("tests.faults.canary.run", args=(1,)),
    ]
    for res in sent:
        task_id: str = res.id

        def failed(task_id: str = task_id) -> bool:
            return bool(app.AsyncResult(task_id).state == states.FAILURE)

        wait_until(failed, 30, "FAILURE NotRegistered")
        assert "NotRegistered" in json.dumps(meta_of(app, task_id)["result"])
    # FAILURE is stored just before the message is dead-lettered
    wait_until(lambda: len(rig.dead(app)) == 2, 10, "both messages in tq.dead")
    _good_task_runs(rig, app)
    assert not marker.exists() and not canary.exists()
    assert worker.count("Received unregistered task") == 2
    figures.update(
        row="S12",
        names=["os.system", "tests.faults.canary.run"],
        state="FAILURE NotRegistered",
        imported=False,
        executed=False,
    )


def test_broker_password_is_never_printed(rig: Rig, figures: dict[str, object]) -> None:
    """S5: worker on ``redis://:<password>@`` (requirepass) at DEBUG, through a connection
    kill, plus ``inspect conf`` / ``stats`` and ``tq-console inspect conf``: the password and
    a secret setting appear nowhere."""
    password = f"pw-{uuid.uuid4().hex}"
    secret = f"sk-{uuid.uuid4().hex}"
    server = rig.server("secured", password=password)
    url = server.url()
    settings = {"stripe_secret_key": secret}
    app = rig.app(settings=settings, broker_url=url)
    worker = rig.worker(concurrency=1, settings=settings, broker_url=url, loglevel="DEBUG")
    killer = server.client()
    killer.client_kill_filter(_type="normal", skipme=True)
    killer.close()
    wait_until(lambda: is_answering(app, worker.nodename), 20, "ping after the kill")
    conf = (
        app.control.inspect(destination=[worker.nodename], timeout=2).conf(with_defaults=True) or {}
    )
    stats = app.control.inspect(destination=[worker.nodename], timeout=2).stats() or {}
    cli = subprocess.run(
        [
            TQ_CONSOLE,
            "-A",
            APP_SPEC,
            "-b",
            url,
            "inspect",
            "conf",
            "-d",
            worker.nodename,
            "-t",
            "3",
            "--json",
        ],
        cwd=ROOT,
        env=worker_env(url, rig.ledger_server.url(), settings=settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    texts = {
        "worker output": worker.output(),
        "inspect conf": json.dumps(conf),
        "inspect stats": json.dumps(stats),
        "tq-console inspect conf": cli.stdout + cli.stderr,
    }
    assert conf and stats and cli.returncode == 0, cli.stderr
    leaks = [where for where, text in texts.items() if password in text or secret in text]
    assert leaks == []
    node_conf = conf[worker.nodename]
    assert node_conf["broker_url"].startswith("redis://:**@")
    assert node_conf["stripe_secret_key"] == "********"
    figures.update(
        row="S5", places_checked=sorted(texts), leaks=0, masked_url=node_conf["broker_url"]
    )


def test_control_allowlist_refuses_shutdown_and_logs_it(
    rig: Rig, figures: dict[str, object]
) -> None:
    """S8: with ``worker_control_allowlist`` = read-only commands, a broadcast ``shutdown`` is
    refused and logged; the worker keeps running."""
    settings = {"worker_control_allowlist": ["ping", "stats", "conf", "active"]}
    app = rig.app(settings=settings)
    worker = rig.worker(concurrency=1, settings=settings)
    app.control.shutdown()
    replies = app.control.pool_grow(1, reply=True, timeout=2)
    time.sleep(2)
    assert worker.is_alive() and is_answering(app, worker.nodename)
    assert "Refused remote control 'shutdown'" in worker.output()
    assert replies and "not allowed" in json.dumps(replies)
    assert len(worker.children()) == 1
    _good_task_runs(rig, app)
    figures.update(row="S8-allowlist", shutdown_refused=True, logged=True)


def test_remote_control_disabled_ignores_shutdown(rig: Rig) -> None:
    """S8: with ``worker_enable_remote_control`` off, pidbox commands are not even heard."""
    settings = {"worker_enable_remote_control": False}
    app = rig.app(settings=settings)
    worker = rig.worker(concurrency=1, settings=settings, wait=False)
    _good_task_runs(rig, app)
    app.control.shutdown()
    time.sleep(2)
    assert worker.is_alive()
    assert "shutdown" not in worker.output().lower().split("[tasks]")[-1]


def test_control_key_refuses_unsigned_mutating_commands_and_accepts_signed_ones(
    rig: Rig, figures: dict[str, object]
) -> None:
    """S8: ``worker_control_key``: unsigned ``pool_grow`` refused (error reply, logged, no new
    child), read-only ``ping`` still answered, the same command signed with the key applied."""
    key = f"key-{uuid.uuid4().hex}"
    worker_settings = {"worker_control_key": key}
    unsigned = rig.app()
    signed = rig.app(settings=worker_settings)
    worker = rig.worker(concurrency=1, settings=worker_settings)
    refused = unsigned.control.pool_grow(1, destination=[worker.nodename], reply=True, timeout=3)
    assert "not signed" in json.dumps(refused), refused
    assert len(worker.children()) == 1
    assert is_answering(unsigned, worker.nodename)
    accepted = signed.control.pool_grow(1, destination=[worker.nodename], reply=True, timeout=3)
    assert accepted and "error" not in json.dumps(accepted), accepted
    wait_until(lambda: len(worker.children()) == 2, 10, "the signed grow")
    assert "Refused remote control 'pool_grow'" in worker.output()
    figures.update(row="S8-key", unsigned="refused", signed="accepted")
