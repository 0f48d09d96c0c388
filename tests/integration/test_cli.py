"""The management commands of ``tq-console`` against a live tq worker (issue 5): inspect,
control, status, purge, result, call, queues, dead, their exit codes (``cli.py``: 0 ok, 1 failed
or no reply, 2 usage, 3 broker unreachable, 4 app not loadable) and ``--metrics-port``.

Most commands run in this process through click's ``CliRunner`` (fast), against a
``tq-console --worker -A tests.interop.ctl_tasks:app -E -n tqw1@%h --metrics-port <port>``
subprocess on Redis db 6 (``TQ_CTL_TEST_URL``). What depends on a fresh process (exit codes of
a broken broker or app, ``--broker`` overrides) runs ``tq-console`` as a subprocess. Commands
that add or replace pool children (terminate, pool_grow/shrink, autoscale) or stop the worker
(shutdown) act on a worker of the test's own, so the module's worker keeps its children.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result
from tests.interop import ctl_tasks
from tests.interop.test_remote_control import (
    HOST,
    TQ_APP,
    TQ_NODE,
    URL,
    EventTap,
    Proc,
    child_env,
    claim_db,
    clean_db,
    db_client,
    free_port,
    private_redis,
    redis_available,
    tq_cli,
    tq_pings,
    tq_worker,
    wait_for,
)

from tq_console.cli import cli as tq_console_cli

pytestmark = [
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.xdist_group("tq_ctl_db6"),
]

METRICS_PORT = free_port()
#: Seconds a subprocess ``tq-console`` may take for a command that fails fast (start-up incl.).
FAIL_FAST_S = 20.0


# -- fixtures and helpers ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def db() -> Iterator[redis.Redis]:
    redis_available()
    claim_db()
    clean_db()
    client = db_client()
    yield client
    client.close()
    ctl_tasks.app.close()
    clean_db()


@pytest.fixture(scope="module")
def worker(db: redis.Redis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """``tqw1@<host>``: prefork, 2 children, task events on, metrics on ``METRICS_PORT``."""
    log = tmp_path_factory.mktemp("cli-tqw1") / "worker.log"
    with tq_worker(log, args=("--metrics-port", str(METRICS_PORT))) as proc:
        yield proc


@pytest.fixture
def own_worker(db: redis.Redis, tmp_path: Path) -> Iterator[Callable[[str], tuple[Proc, str]]]:
    """``own_worker(name)``: a tq worker of this test alone on queue ``<name>_q``."""
    with contextlib.ExitStack() as stack:

        def start(name: str) -> tuple[Proc, str]:
            log = tmp_path / f"{name}.log"
            proc = stack.enter_context(tq_worker(log, name=name, args=("-Q", f"{name}_q")))
            return proc, f"{name}@{HOST}"

        yield start


def cli(*args: str, input: str | None = None) -> Result:
    """``tq-console -A tests.interop.ctl_tasks:app <args>`` in this process."""
    runner = CliRunner()
    return runner.invoke(
        tq_console_cli,
        ["-A", TQ_APP, *args],
        obj={},
        input=input,
        env={"TQ_BROKER_URL": URL, "TQ_RESULT_BACKEND": URL},
        catch_exceptions=False,
    )


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}:\n{result.output}"
    return result.stdout


def as_json(result: Result) -> Any:
    return json.loads(ok(result))


def call_id(result: Result) -> str:
    """The task id ``call`` prints on its first line."""
    first = result.stdout.splitlines()[0]
    uuid.UUID(first)
    return first


def script(
    *args: str, timeout: float = FAIL_FAST_S, url: str = URL
) -> subprocess.CompletedProcess[str]:
    """The installed ``tq-console`` script (not ``-m``): exit codes of the real entry point.
    Runs in a session of its own; on timeout the whole group (a worker's pool too) is killed
    and the test fails."""
    exe = str(Path(sys.executable).parent / "tq-console")
    cmd = [exe, *args]
    proc = subprocess.Popen(
        cmd,
        env=child_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"{cmd} still ran after {timeout} s:\n{out[-2000:]}\n{err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def control_reply(result: Result, node: str = TQ_NODE) -> Any:
    got = as_json(result)
    assert node in got, got
    return got[node]


def wait_result(task_id: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
    def meta() -> dict[str, Any] | None:
        backend = ctl_tasks.app.backend
        assert backend is not None
        got = backend.get_meta(task_id)
        return got if got.get("status") == state else None

    return wait_for(meta, timeout, f"{task_id} to be {state}")


# -- inspect ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("command", "extra"),
    [
        ("ping", ()),
        ("active", ()),
        ("reserved", ()),
        ("scheduled", ()),
        ("revoked", ()),
        ("registered", ()),
        ("registered", ("rate_limit",)),
        ("stats", ()),
        ("active_queues", ()),
        ("query_task", ("00000000-0000-0000-0000-000000000000",)),
        ("conf", ()),
        ("report", ()),
        ("clock", ()),
    ],
)
def test_inspect_each_command_json(worker: Proc, command: str, extra: tuple[str, ...]) -> None:
    got = as_json(cli("inspect", command, *extra, "-d", TQ_NODE, "-t", "10", "--json"))
    assert set(got) == {TQ_NODE}
    value = got[TQ_NODE]
    expected: dict[str, Callable[[Any], bool]] = {
        "ping": lambda v: v == {"ok": "pong"},
        "active": lambda v: v == [],
        "reserved": lambda v: v == [],
        "scheduled": lambda v: v == [],
        "revoked": lambda v: isinstance(v, list),
        "registered": lambda v: (
            "rc.add" in v and ("rc.limited [rate_limit=100/m]" in v if extra else "rc.limited" in v)
        ),
        "stats": lambda v: v["pid"] == worker.pid and v["pool"]["max-concurrency"] == 2,
        "active_queues": lambda v: [q["name"] for q in v] == ["celery"],
        "query_task": lambda v: v == {},
        "conf": lambda v: v["stripe_secret_key"] == "********",
        "report": lambda v: TQ_NODE in v["ok"],
        "clock": lambda v: v["clock"] > 0,
    }
    assert expected[command](value), value


def test_inspect_human_output_and_no_reply(worker: Proc) -> None:
    out = ok(cli("inspect", "ping", "-d", TQ_NODE, "-t", "10"))
    assert out.splitlines()[0] == f"->  {TQ_NODE}: OK"
    assert '"ok": "pong"' in out and out.rstrip().endswith("1 node online.")
    nobody = cli("inspect", "ping", "-d", "nobody@nowhere", "-t", "0.5")
    assert nobody.exit_code == 1
    assert "No nodes replied within time constraint" in nobody.stderr


def test_inspect_and_control_usage_errors(worker: Proc) -> None:
    for args, message in [
        (("inspect", "no_such_cmd"), "'no_such_cmd' is not one of 'ping', 'active'"),
        (("control", "no_such_cmd"), "'no_such_cmd' is not one of 'add_consumer'"),
        (("control", "rate_limit", "rc.add"), "rate_limit takes: task_name rate_limit"),
        (("control", "add_consumer"), "add_consumer takes: queue"),
        (("control", "shutdown", "now"), "shutdown takes: no arguments"),
        (("control", "pool_grow", "many"), "n must be a number, got 'many'"),
        (("control", "time_limit", "rc.add", "x", "1"), "soft must be a number"),
        (("no_such_command",), "No such command 'no_such_command'"),
    ]:
        res = cli(*args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.output


# -- control ----------------------------------------------------------------------------------
def test_control_revoke(worker: Proc, db: redis.Redis) -> None:
    task_id = str(uuid.uuid4())
    reply = control_reply(cli("control", "revoke", task_id, "-d", TQ_NODE, "-t", "10", "--json"))
    assert reply == {"ok": f"tasks {{'{task_id}'}} flagged as revoked"}
    revoked = as_json(cli("inspect", "revoked", "-d", TQ_NODE, "-t", "10", "--json"))
    assert task_id in revoked[TQ_NODE]
    assert db.zscore(ctl_tasks.app.transport.keys.revoked, task_id) is not None
    marker = f"rv-{uuid.uuid4()}"
    ctl_tasks.app.send_task("rc.touch", [marker], task_id=task_id)
    wait_result(task_id, "REVOKED")
    res = cli("result", task_id)
    assert res.exit_code == 1 and res.stdout.startswith("REVOKED")
    assert db.get(marker) is None


def test_control_terminate(own_worker: Callable[[str], tuple[Proc, str]]) -> None:
    proc, node = own_worker("cliterm")
    task_id = call_id(cli("call", "rc.sleep", "--args", "[30]", "-Q", "cliterm_q"))

    def running() -> bool:
        got = as_json(cli("inspect", "active", "-d", node, "-t", "5", "--json"))
        return any(t["id"] == task_id for t in got[node])

    wait_for(running, 20.0, "the sleep task to run", proc.log)
    human = ok(cli("control", "terminate", task_id, "-d", node, "-t", "10"))
    assert f"->  {node}: OK" in human and f"terminate: {task_id}" in human
    meta = wait_result(task_id, "REVOKED", 20.0)
    assert "terminated" in json.dumps(meta["result"])


def test_control_rate_limit_and_time_limit(worker: Proc) -> None:
    reply = control_reply(
        cli("control", "rate_limit", "rc.add", "10/m", "-d", TQ_NODE, "-t", "10", "--json")
    )
    assert reply == {"ok": "new rate limit set successfully"}
    reply = control_reply(
        cli("control", "time_limit", "rc.add", "10", "20", "-d", TQ_NODE, "-t", "10", "--json")
    )
    assert reply == {"ok": "time limits set successfully"}
    info = as_json(
        cli(
            "inspect",
            "registered",
            "rate_limit",
            "time_limit",
            "soft_time_limit",
            "-d",
            TQ_NODE,
            "-t",
            "10",
            "--json",
        )
    )[TQ_NODE]
    assert "rc.add [rate_limit=10/m time_limit=20.0 soft_time_limit=10.0]" in info
    bad = control_reply(
        cli("control", "rate_limit", "rc.nope", "1/s", "-d", TQ_NODE, "-t", "10", "--json")
    )
    assert "error" in bad and "rc.nope" in bad["error"]
    control_reply(cli("control", "rate_limit", "rc.add", "0", "-d", TQ_NODE, "-t", "10", "--json"))
    control_reply(
        cli("control", "time_limit", "rc.add", "0", "0", "-d", TQ_NODE, "-t", "10", "--json")
    )


def test_control_pool_grow_shrink_and_autoscale(
    own_worker: Callable[[str], tuple[Proc, str]],
) -> None:
    proc, node = own_worker("clipool")

    def size() -> int:
        stats = as_json(cli("inspect", "stats", "-d", node, "-t", "5", "--json"))[node]
        return len(stats["pool"]["processes"])

    assert size() == 2
    reply = control_reply(cli("control", "pool_grow", "-d", node, "-t", "10", "--json"), node)
    assert reply == {"ok": "pool will grow"}  # n defaults to 1
    wait_for(lambda: size() == 3, 20.0, "the pool to grow", proc.log)
    reply = control_reply(
        cli("control", "pool_shrink", "1", "-d", node, "-t", "10", "--json"), node
    )
    assert reply == {"ok": "pool will shrink"}
    wait_for(lambda: size() == 2, 20.0, "the pool to shrink", proc.log)
    reply = control_reply(
        cli("control", "autoscale", "3", "1", "-d", node, "-t", "10", "--json"), node
    )
    assert reply == {"ok": "autoscale now max=3 min=1"}


def test_control_add_and_cancel_consumer(worker: Proc, db: redis.Redis) -> None:
    queue = f"cli-{uuid.uuid4().hex[:6]}"

    def consumed() -> list[str]:
        got = as_json(cli("inspect", "active_queues", "-d", TQ_NODE, "-t", "10", "--json"))
        return [q["name"] for q in got[TQ_NODE]]

    reply = control_reply(
        cli("control", "add_consumer", queue, "-d", TQ_NODE, "-t", "10", "--json")
    )
    assert reply == {"ok": f"add consumer {queue}"}
    assert queue in consumed()
    marker = f"ac-{uuid.uuid4()}"
    task_id = call_id(cli("call", "rc.touch", "--args", json.dumps([marker]), "-Q", queue))
    wait_result(task_id, "SUCCESS")
    assert db.get(marker) == b"ran"
    reply = control_reply(
        cli("control", "cancel_consumer", queue, "-d", TQ_NODE, "-t", "10", "--json")
    )
    assert reply == {"ok": f"no longer consuming from {queue}"}
    assert queue not in consumed()
    db.delete(queue)


def test_control_events_and_heartbeat(worker: Proc) -> None:
    tap = EventTap()
    try:
        reply = control_reply(cli("control", "disable_events", "-d", TQ_NODE, "-t", "10", "--json"))
        assert reply == {"ok": "task events disabled"}
        quiet = call_id(cli("call", "rc.add", "--args", "[1, 1]", "--wait", "30"))
        tap.poll(1.0)
        assert tap.of(quiet) == []
        reply = control_reply(cli("control", "enable_events", "-d", TQ_NODE, "-t", "10", "--json"))
        assert reply == {"ok": "task events enabled"}
        loud = call_id(cli("call", "rc.add", "--args", "[2, 2]", "--wait", "30"))
        tap.until(lambda: "task-succeeded" in tap.of(loud), 10.0, "task events again")
        # heartbeat: no reply is expected, the worker publishes a heartbeat at once.
        tap.events.clear()
        res = cli("control", "heartbeat", "-d", TQ_NODE)
        assert res.exit_code == 0, res.output
        assert "No nodes replied" not in res.output
        tap.until(
            lambda: any(
                e["type"] == "worker-heartbeat" and e.get("freq") == 5.0 for e in tap.events
            ),
            5.0,
            "the requested heartbeat",
        )
    finally:
        tap.close()


def test_control_shutdown(own_worker: Callable[[str], tuple[Proc, str]]) -> None:
    proc, node = own_worker("clidown")
    res = cli("control", "shutdown", "-d", node)
    assert res.exit_code == 0, res.output
    assert "No nodes replied" not in res.output and "shutdown" in res.stdout
    wait_for(lambda: not proc.alive(), 30.0, f"{node} to exit", proc.log)
    assert proc.popen.returncode == 0
    assert not tq_pings(node)


# -- status -----------------------------------------------------------------------------------
def test_status_with_a_worker(worker: Proc) -> None:
    out = ok(cli("status", "-t", "2"))
    assert f"->  {TQ_NODE}: OK" in out and re.search(r"\d+ nodes? online\.", out)
    assert TQ_NODE in as_json(cli("status", "-t", "2", "--json"))


def test_status_without_a_worker(tmp_path: Path) -> None:
    with private_redis(tmp_path) as url:
        res = tq_cli("status", "-t", "1", url=url, timeout=60)
        assert res.returncode == 1, res.stdout + res.stderr
        assert "0 nodes online." in res.stdout and "Traceback" not in res.stderr
        res = tq_cli("status", "-t", "1", "--json", url=url, timeout=60)
        assert res.returncode == 1 and json.loads(res.stdout) == []


# -- purge, queues ----------------------------------------------------------------------------
def test_purge_asks_then_says_how_many_went(worker: Proc, db: redis.Redis) -> None:
    queue = f"purge-{uuid.uuid4().hex[:6]}"
    for i in range(3):
        ok(cli("call", "rc.add", "--args", f"[{i}, 0]", "-Q", queue))
    asked = cli("purge", "-Q", queue, input="n\n")
    assert asked.exit_code == 1 and "Aborted" in asked.output
    assert f"3 message(s) will be deleted from: {queue} (3). Continue?" in asked.output
    assert ctl_tasks.app.transport.queue_length(queue) == 3
    out = ok(cli("purge", "-Q", queue, input="y\n"))
    assert "Purged 3 messages from 1 known task queue." in out
    assert ctl_tasks.app.transport.queue_length(queue) == 0
    for i in range(2):
        ok(cli("call", "rc.add", "--args", f"[{i}, 0]", "-Q", queue))
    forced = ok(cli("purge", "-Q", f"{queue},empty-{queue}", "-f"))
    assert forced.strip() == "Purged 2 messages from 2 known task queues."
    assert "Continue?" not in forced


def test_queues_json_shape(worker: Proc) -> None:
    queue = f"qs-{uuid.uuid4().hex[:6]}"
    ok(cli("call", "rc.add", "--args", "[1, 2]", "-Q", queue))
    ok(cli("call", "rc.add", "--args", "[1, 2]", "-Q", queue, "--priority", "9"))
    got = as_json(cli("queues", "-Q", f"celery,{queue}", "--json"))
    assert set(got) == {"queues", "unacked", "oldest_unacked_age", "visibility_timeout"}
    assert set(got["queues"]) == {"celery", queue}
    per_step = got["queues"][queue]
    assert set(per_step) == {"0", "3", "6", "9"} and sum(per_step.values()) == 2
    assert per_step["0"] == 1 and per_step["9"] == 1
    assert isinstance(got["unacked"], int) and got["visibility_timeout"] > 0
    assert got["oldest_unacked_age"] is None or got["oldest_unacked_age"] >= 0
    human = ok(cli("queues", "-Q", queue))
    assert re.search(rf"^{re.escape(queue)}\s+2\s+\(p0:1  p3:0  p6:0  p9:1\)$", human, re.M)
    assert "unacked:" in human
    ctl_tasks.app.transport.purge(queue)


# -- call and result --------------------------------------------------------------------------
def test_call_and_result_success(worker: Proc) -> None:
    res = cli("call", "rc.add", "--args", "[2, 3]", "--wait", "30")
    lines = ok(res).splitlines()
    task_id = call_id(res)
    assert lines[1] == "5"
    assert ok(cli("result", task_id)).strip() == "SUCCESS: 5"
    meta = as_json(cli("result", task_id, "--json"))
    assert (meta["status"], meta["result"], meta["task_id"]) == ("SUCCESS", 5, task_id)
    kw = cli("call", "rc.add", "--kwargs", '{"x": 4, "y": 5}', "--wait", "30")
    assert ok(kw).splitlines()[1] == "9"
    pending = cli("result", str(uuid.uuid4()))
    assert pending.exit_code == 0 and pending.stdout.startswith("PENDING")


def test_call_and_result_failure(worker: Proc) -> None:
    res = cli("call", "rc.fail", "--args", '["boom"]', "--wait", "30")
    assert res.exit_code == 1, res.output
    task_id = call_id(res)
    assert "ValueError" in res.stderr and "boom" in res.stderr
    failed = cli("result", task_id)
    assert failed.exit_code == 1 and failed.stdout.startswith("FAILURE")
    tb = cli("result", task_id, "--traceback")
    assert tb.exit_code == 1
    assert "Traceback (most recent call last)" in tb.stdout and "ValueError: boom" in tb.stdout
    assert as_json_exit(cli("result", task_id, "--json"), 1)["status"] == "FAILURE"
    slow = cli("call", "rc.sleep", "--args", "[3]", "--wait", "0.5")
    assert slow.exit_code == 1 and "Error:" in slow.stderr and "Traceback" not in slow.output


def as_json_exit(result: Result, code: int) -> Any:
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def test_call_countdown_and_queue(worker: Proc, db: redis.Redis) -> None:
    sent = time.time()
    task_id = call_id(cli("call", "rc.add", "--args", "[1, 1]", "--countdown", "4"))

    def scheduled() -> bool:
        got = as_json(cli("inspect", "scheduled", "-d", TQ_NODE, "-t", "5", "--json"))
        return any(e["request"]["id"] == task_id for e in got[TQ_NODE])

    wait_for(scheduled, 10.0, "the countdown task to be held", worker.log)
    wait_result(task_id, "SUCCESS", 30.0)
    assert time.time() - sent >= 3.5
    other = f"other-{uuid.uuid4().hex[:6]}"
    queued = call_id(cli("call", "rc.add", "--args", "[1, 1]", "-Q", other))
    assert db.llen(other) == 1
    head = db.lindex(other, 0)
    assert isinstance(head, bytes) and json.loads(head)["headers"]["id"] == queued
    ctl_tasks.app.transport.purge(other)


def test_call_bad_arguments(worker: Proc) -> None:
    for args, message in [
        (("--args", "[1,"), "--args is not valid JSON"),
        (("--args", '{"x": 1}'), "--args must be a JSON list"),
        (("--kwargs", "[1]"), "--kwargs must be a JSON dict"),
        (("--kwargs", "{x: 1}"), "--kwargs is not valid JSON"),
        (("--eta", "tomorrow"), "--eta"),
        (("--countdown", "-1"), "--countdown"),
    ]:
        res = cli("call", "rc.add", *args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.stderr and "Traceback" not in res.output


# -- dead letters -----------------------------------------------------------------------------
def test_dead_list_requeue_purge(worker: Proc, db: redis.Redis) -> None:
    transport = ctl_tasks.app.transport
    # A message no worker can read: the worker dead-letters it.
    db.lpush("celery", b"this is not a message")
    wait_for(lambda: transport.dead_count() == 1, 20.0, "the worker to dead-letter it", worker.log)
    # A good message recorded as dead (as if it had failed to run): requeue runs it.
    marker = f"dl-{uuid.uuid4()}"
    parked = f"park-{uuid.uuid4().hex[:6]}"
    good_id = call_id(cli("call", "rc.touch", "--args", json.dumps([marker]), "-Q", parked))
    raw = db.rpop(parked)
    assert isinstance(raw, bytes)
    entry = transport.dead_letter(
        "test: parked", "celery", raw, task_id=good_id, task_name="rc.touch"
    )

    rows = as_json(cli("dead", "list", "--json"))
    assert len(rows) == 2 and rows[0]["id"] == entry
    assert (rows[0]["task_id"], rows[0]["task_name"], rows[0]["queue"]) == (
        good_id,
        "rc.touch",
        "celery",
    )
    assert rows[1]["queue"] == "celery" and rows[1]["reason"]
    human = ok(cli("dead", "list"))
    assert entry in human and "rc.touch" in human and "2 dead letter(s)." in human

    out = cli("dead", "requeue", entry)
    assert out.exit_code == 0 and f"requeued dead letter {entry} onto 'celery'" in out.output
    wait_result(good_id, "SUCCESS")
    assert db.get(marker) == b"ran"
    again = cli("dead", "requeue", entry)
    assert again.exit_code == 1 and "is gone" in again.output

    asked = cli("dead", "purge", input="n\n")
    assert asked.exit_code == 1 and "1 dead letter(s) will be deleted" in asked.output
    assert transport.dead_count() == 1
    assert ok(cli("dead", "purge", "-f")).strip() == "Deleted 1 dead letter(s)."
    assert transport.dead_count() == 0


# -- broker and app errors --------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ("inspect", "ping"),
        ("status",),
        ("purge", "-f"),
        ("result", "x"),
        ("dead", "list"),
        ("--worker",),
    ],
    ids=["inspect", "status", "purge", "result", "dead", "worker"],
)
def test_unreachable_broker_exits_3(args: tuple[str, ...]) -> None:
    started = time.monotonic()
    res = script("-A", TQ_APP, "--broker", "redis://:sekret@127.0.0.1:1/0", *args)
    elapsed = time.monotonic() - started
    assert res.returncode == 3, res.stdout + res.stderr
    assert "cannot reach the broker at redis://:**@127.0.0.1:1/0" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout and "sekret" not in res.stderr
    assert elapsed < FAIL_FAST_S


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz", "cannot import app module 'no_such_module_xyz'"),
        ("tests.interop.ctl_tasks:nope", "has no tq App (looked for nope"),
        ("tests.interop.celery_cli_app", "has no tq App (looked for app, celery"),
    ],
)
@pytest.mark.parametrize("command", [("status",), ("--worker",)], ids=["status", "worker"])
def test_bad_app_exits_4(spec: str, message: str, command: tuple[str, ...]) -> None:
    res = script("-A", spec, *command)
    assert res.returncode == 4, res.stdout + res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr


# -- metrics ----------------------------------------------------------------------------------
def samples(text: str, metric: str) -> list[tuple[dict[str, str], float]]:
    """``(labels, value)`` of every sample of ``metric`` in Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name != metric:
            continue
        labels, _, value = rest.rpartition("} ")
        out.append((dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(value)))
    return out


def test_metrics_port_serves_prometheus_text(worker: Proc) -> None:
    task_id = call_id(cli("call", "rc.add", "--args", "[20, 22]", "--wait", "30"))
    wanted = {"worker": TQ_NODE, "name": "rc.add", "state": "SUCCESS"}

    def scrape() -> str | None:
        url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = resp.read().decode()
        done = [v for labels, v in samples(text, "tq_tasks_total") if labels == wanted]
        return text if done and done[0] >= 1 else None

    text = wait_for(scrape, 10.0, f"tq_tasks_total for rc.add ({task_id})", worker.log)
    assert "# TYPE tq_tasks_total counter" in text
    assert "# TYPE tq_task_runtime_seconds histogram" in text
    (count,) = [
        v
        for labels, v in samples(text, "tq_task_runtime_seconds_count")
        if labels == {"worker": TQ_NODE}
    ]
    assert count >= 1
    queue = {tuple(sorted(labels.items())) for labels, _ in samples(text, "tq_queue_length")}
    assert (("priority", "0"), ("queue", "celery")) in queue
    assert re.search(r"^tq_children 2\.0$", text, re.M)
