"""Remote control and events between tq and Celery's own tools, with real processes (issue 5,
wire spec 5.2, 5.3 and 11.3).

* A ``tq-console --worker -A tests.interop.ctl_tasks:app -E -n tqw1@%h`` subprocess answers
  ``celery -A tests.interop.celery_cli_app inspect …`` and obeys ``celery … control …``, and its
  task events show in ``celery … events --dump``.
* A real ``celery worker -P solo`` subprocess answers ``tq-console inspect`` and honours
  ``tq-console control revoke``.

Everything runs on Redis db 6 (``TQ_CTL_TEST_URL`` overrides), cleaned before and after each
module; the secret-masking test also starts a private ``redis-server`` with ``requirepass``.
Every wait is bounded and every process is stopped in teardown (SIGTERM, then SIGKILL).

The helpers at the top (processes, the Celery and tq command lines, the db cleaner) are shared
with ``tests/interop/test_flower.py`` and ``tests/integration/test_cli.py``. The three modules
share db 6, so they are kept on one xdist worker (``--dist loadgroup``).

Celery 5.7's command line has no ``control revoke <id> --terminate``; its spelling is
``control terminate <signal> <id>``, which sends the same ``revoke`` request with
``terminate: true`` — that is what the terminate test runs.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.interop import ctl_tasks  # noqa: E402

pytestmark = [
    pytest.mark.interop,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.xdist_group("tq_ctl_db6"),
]

#: Broker and result backend of every process these tests start.
URL = ctl_tasks.URL
HOST = socket.gethostname()
TQ_APP = "tests.interop.ctl_tasks:app"
CELERY_APP = "tests.interop.celery_cli_app"
TQ_NODE = f"tqw1@{HOST}"
CELERY_NODE = f"cw1@{HOST}"
#: Queue the Celery worker consumes, so it never takes the tq worker's tasks.
CELERY_QUEUE = "cq"
#: Seconds a worker subprocess may take to answer its first ping (the machine may be loaded).
START_TIMEOUT_S = 60.0
#: Seconds one ``celery``/``tq-console`` command may take (interpreter start-up included).
CLI_TIMEOUT_S = 90.0
#: Seconds a stopped process gets before SIGKILL.
STOP_TIMEOUT_S = 20.0
#: Keys no test of these modules may delete: the execution ledgers of ``tests/tasks.py``
#: (``LEDGER_DB`` is also 6).
KEEP_PREFIX = b"ledger:"
T = TypeVar("T")


# -- waiting and the database ----------------------------------------------------------------
def wait_for(
    probe: Callable[[], T | None], timeout: float, what: str, log: Path | None = None
) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            tail = log.read_text("utf-8", "replace")[-3000:] if log and log.exists() else ""
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{tail}")
        time.sleep(0.1)


def redis_available(url: str = URL) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {url} is not reachable: {exc}")
        pytest.skip(f"Redis at {url} is not reachable: {exc}")
    finally:
        client.close()


def claim_db(url: str = URL) -> None:
    """Fail at once when workers of someone else (another test session, a stray process)
    answer on the test database: their replies and task pickups would mix with ours."""
    from tq import App

    app = App(broker=url, set_as_current=False)
    try:
        others = sorted(app.control.inspect(timeout=1.0).ping() or {})
    finally:
        app.close()
    if others:
        pytest.fail(
            f"workers {others} already answer on {url}: another session is using the "
            "database (set TQ_CTL_TEST_URL to another one, or stop them)"
        )


def clean_db(url: str = URL) -> None:
    """Empty the test database, but keep the ledger keys other test files keep there."""
    client = redis.Redis.from_url(url)
    try:
        doomed = [k for k in client.scan_iter(count=1000) if not k.startswith(KEEP_PREFIX)]
        for i in range(0, len(doomed), 500):
            client.delete(*doomed[i : i + 500])
    finally:
        client.close()


def db_client(url: str = URL) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(url: str = URL, **extra: str) -> dict[str, str]:
    """The environment of every subprocess: the test URL for tq and Celery alike."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(
        TQ_CTL_TEST_URL=url,
        TQ_BROKER_URL=url,
        TQ_RESULT_BACKEND=url,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


# -- processes --------------------------------------------------------------------------------
class Proc:
    """A long-running subprocess in its own session, its output in a log file."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        self.cmd = cmd
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text("utf-8", "replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM the process (warm shutdown), then SIGKILL its whole group if it lingers."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        return self.popen.poll()


def tq_pings(node: str, url: str = URL, timeout: float = 1.0) -> bool:
    """Does ``node`` answer a ping (asked with tq's own control client)?"""
    from tq import App

    app = App(broker=url, set_as_current=False)
    try:
        got = app.control.inspect(destination=[node], timeout=timeout).ping() or {}
        return node in got
    except Exception:
        return False
    finally:
        app.close()


def wait_until_pings(proc: Proc, node: str, url: str = URL) -> None:
    def ready() -> bool:
        if not proc.alive():
            pytest.fail(f"{node} exited with {proc.popen.returncode}:\n{proc.output()[-4000:]}")
        return tq_pings(node, url, 0.5)

    wait_for(ready, START_TIMEOUT_S, f"{node} to answer ping", proc.log)


@contextlib.contextmanager
def tq_worker(
    log: Path, name: str = "tqw1", url: str = URL, args: tuple[str, ...] = ()
) -> Iterator[Proc]:
    """``tq-console --worker -A tests.interop.ctl_tasks:app -E -n <name>@%h -c 2``, answering
    ping when yielded. Run as ``python -m tq_console`` (the entry point of the ``tq-console``
    script) so nobody's ``pkill tq-console`` on a shared machine takes it down mid-test."""
    cmd = [
        sys.executable,
        "-m",
        "tq_console",
        "--worker",
        "-A",
        TQ_APP,
        "-E",
        "-n",
        f"{name}@%h",
        "-c",
        "2",
        "-l",
        "INFO",
        *args,
    ]
    proc = Proc(cmd, log, child_env(url))
    try:
        wait_until_pings(proc, f"{name}@{HOST}", url)
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def celery_worker(log: Path, name: str = "cw1", url: str = URL) -> Iterator[Proc]:
    """``celery -A tests.interop.celery_cli_app worker -P solo -c 1 -n cw1@%h`` on its own queue
    (``cq``), answering ping when yielded."""
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        CELERY_APP,
        "worker",
        "-P",
        "solo",
        "-c",
        "1",
        "-n",
        f"{name}@%h",
        "--without-mingle",
        "--without-gossip",
        "-Q",
        CELERY_QUEUE,
        "-l",
        "INFO",
    ]
    proc = Proc(cmd, log, child_env(url))
    try:
        wait_until_pings(proc, f"{name}@{HOST}", url)
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def private_redis(tmp: Path, password: str | None = None) -> Iterator[str]:
    """A throw-away ``redis-server`` on a free port; yields its URL (db 6, with the password)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    cmd = [
        exe,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp),
    ]
    if password:
        cmd += ["--requirepass", password]
    proc = Proc(cmd, tmp / f"redis-{port}.log", dict(os.environ))
    auth = f":{password}@" if password else ""
    url = f"redis://{auth}127.0.0.1:{port}/6"
    try:

        def up() -> bool:
            try:
                return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
            except redis.RedisError:
                return False

        wait_for(up, 20.0, f"the private redis-server on port {port}", proc.log)
        yield url
    finally:
        proc.stop(5.0)


# -- command lines ----------------------------------------------------------------------------
def run(
    cmd: list[str], url: str = URL, timeout: float = CLI_TIMEOUT_S, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        cwd=REPO,
        env=child_env(url),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        stdin=None if input else subprocess.DEVNULL,
    )


def celery_cli(
    *args: str, url: str = URL, timeout: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """``celery -A tests.interop.celery_cli_app <args>``."""
    return run([sys.executable, "-m", "celery", "-A", CELERY_APP, *args], url, timeout)


def tq_cli(
    *args: str, url: str = URL, timeout: float = CLI_TIMEOUT_S, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``tq-console -A tests.interop.ctl_tasks:app <args>`` (as ``python -m tq_console``)."""
    return run([sys.executable, "-m", "tq_console", "-A", TQ_APP, *args], url, timeout, input)


def no_traceback(res: subprocess.CompletedProcess[str]) -> None:
    text = res.stdout + res.stderr
    assert "Traceback" not in text, text[-4000:]


def celery_json(
    kind: str, command: str, *args: str, node: str = TQ_NODE, url: str = URL, timeout: float = 10.0
) -> Any:
    """Run ``celery inspect|control <command> <args> -d <node> -t <timeout> --json`` and return
    the parsed reply; the command must succeed and print no traceback."""
    res = celery_cli(kind, command, *args, "-d", node, "-t", str(timeout), "--json", url=url)
    no_traceback(res)
    assert res.returncode == 0, (
        f"celery {kind} {command} failed ({res.returncode}):\n" + (res.stdout + res.stderr)[-4000:]
    )
    return json.loads(res.stdout)


def node_reply(reply: Any, node: str = TQ_NODE) -> Any:
    """The value for ``node`` in an inspect (``{node: v}``) or control (``[{node: v}]``) reply."""
    if isinstance(reply, list):
        merged: dict[str, Any] = {}
        for item in reply:
            merged.update(item)
        reply = merged
    assert node in reply, f"{node} did not answer: {reply}"
    return reply[node]


# -- Celery in this process (the client side of "real Celery") -------------------------------
def celery_app() -> Any:
    from tests.interop.celery_cli_app import app

    return app


def celery_inspect(node: str = TQ_NODE, timeout: float = 5.0) -> Any:
    return celery_app().control.inspect(destination=[node], timeout=timeout)


def celery_state(task_id: str) -> str:
    return str(celery_app().AsyncResult(task_id).state)


def wait_celery_state(
    task_id: str, wanted: str, timeout: float = 30.0, log: Path | None = None
) -> Any:
    """Wait until Celery's ``AsyncResult`` reports ``wanted``; returns the AsyncResult."""
    res = celery_app().AsyncResult(task_id)
    wait_for(
        lambda: res.state == wanted, timeout, f"{task_id} to be {wanted} (now {res.state})", log
    )
    return res


class EventTap:
    """Listens to every event on the test database (``PSUBSCRIBE /<db>.celeryev/*``) and
    decodes the envelopes, batched (``task.multi``) or not. Polled, no thread of its own."""

    def __init__(self, url: str = URL) -> None:
        db = int(url.rsplit("/", 1)[1] or 0)
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(f"/{db}.celeryev/*")
        self.events: list[dict[str, Any]] = []

    def poll(self, seconds: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            msg = self.pubsub.get_message(timeout=min(left, 0.2))
            if msg is None or msg.get("type") != "pmessage":
                continue
            envelope = json.loads(msg["data"])
            body = json.loads(base64.b64decode(envelope["body"]))
            self.events.extend(body if isinstance(body, list) else [body])
        return self.events

    def until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}: {self.events}")
            self.poll(0.2)

    def of(self, task_id: str) -> list[str]:
        return [e["type"] for e in self.events if e.get("uuid") == task_id]

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def db() -> Iterator[redis.Redis]:
    redis_available()
    claim_db()
    clean_db()
    client = db_client()
    yield client
    client.close()
    clean_db()


@pytest.fixture(scope="module")
def worker(db: redis.Redis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """The module's tq worker ``tqw1@<host>`` (prefork, 2 children, task events on)."""
    log = tmp_path_factory.mktemp("tqw1") / "worker.log"
    with tq_worker(log) as proc:
        yield proc


@pytest.fixture(scope="module")
def cworker(db: redis.Redis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """The module's real Celery worker ``cw1@<host>`` (solo), consuming queue ``cq``."""
    log = tmp_path_factory.mktemp("cw1") / "worker.log"
    with celery_worker(log) as proc:
        yield proc


@pytest.fixture
def own_worker(db: redis.Redis, tmp_path: Path) -> Iterator[Callable[[str], tuple[Proc, str]]]:
    """``own_worker(name)``: a tq worker ``<name>@<host>`` of this test alone, consuming queue
    ``<name>_q``; returns ``(process, node name)``. Tests that replace or add pool children
    use one, so the module's worker keeps the children the leak check saw at the start."""
    with contextlib.ExitStack() as stack:

        def start(name: str) -> tuple[Proc, str]:
            log = tmp_path / f"{name}.log"
            proc = stack.enter_context(tq_worker(log, name=name, args=("-Q", f"{name}_q")))
            return proc, f"{name}@{HOST}"

        yield start


def stats_of(node: str = TQ_NODE) -> dict[str, Any]:
    got = celery_inspect(node).stats() or {}
    assert node in got, f"{node} did not answer stats"
    return dict(got[node])


# -- celery inspect → tq worker ----------------------------------------------------------------
def test_celery_inspect_ping(worker: Proc) -> None:
    assert celery_json("inspect", "ping") == {TQ_NODE: {"ok": "pong"}}
    human = celery_cli("inspect", "ping", "-t", "5")
    no_traceback(human)
    assert human.returncode == 0, human.stdout + human.stderr
    assert f"->  {TQ_NODE}: OK" in human.stdout and "pong" in human.stdout


def test_celery_inspect_stats(worker: Proc) -> None:
    stats = node_reply(celery_json("inspect", "stats"))
    assert stats["pid"] == worker.pid
    assert isinstance(stats["clock"], str) and int(stats["clock"]) > 0  # a string, as Celery's
    assert stats["uptime"] >= 0 and isinstance(stats["total"], dict)
    pool = stats["pool"]
    assert pool["max-concurrency"] == 2 and len(pool["processes"]) == 2
    assert {"hostname", "port", "transport", "virtual_host"} <= set(stats["broker"])
    assert stats["broker"]["transport"] == "redis" and stats["broker"]["virtual_host"] == "6"
    assert isinstance(stats["prefetch_count"], int) and "rusage" in stats
    human = celery_cli("inspect", "stats", "-d", TQ_NODE, "-t", "10")
    no_traceback(human)
    assert human.returncode == 0 and '"max-concurrency": 2' in human.stdout


def test_celery_inspect_registered(worker: Proc) -> None:
    names = node_reply(celery_json("inspect", "registered"))
    assert {"rc.add", "rc.sleep", "rc.fail", "rc.touch", "rc.limited"} <= set(names)
    assert names == sorted(names)
    with_info = node_reply(celery_json("inspect", "registered", "rate_limit"))
    assert "rc.limited [rate_limit=100/m]" in with_info and "rc.add" in with_info
    human = celery_cli("inspect", "registered", "-d", TQ_NODE, "-t", "10")
    no_traceback(human)
    assert human.returncode == 0 and "* rc.add" in human.stdout


def test_celery_inspect_active_queues(worker: Proc) -> None:
    queues = node_reply(celery_json("inspect", "active_queues"))
    (q,) = [q for q in queues if q["name"] == "celery"]
    assert q["exchange"]["name"] == "celery" and q["exchange"]["type"] == "direct"
    assert q["routing_key"] == "celery" and q["durable"] is True
    assert {"queue_arguments", "binding_arguments", "no_ack", "max_priority"} <= set(q)


def test_celery_inspect_conf_masks_the_secrets(worker: Proc) -> None:
    res = celery_cli("inspect", "conf", "-d", TQ_NODE, "-t", "10", "--json")
    no_traceback(res)
    assert res.returncode == 0, res.stdout + res.stderr
    conf = node_reply(json.loads(res.stdout))
    assert conf["stripe_secret_key"] == "********"
    assert conf["broker_url"] == URL and conf["worker_prefetch_multiplier"] == 1
    assert ctl_tasks.FAKE_SECRET not in res.stdout
    human = celery_cli("inspect", "conf", "-d", TQ_NODE, "-t", "10")
    no_traceback(human)
    assert human.returncode == 0 and ctl_tasks.FAKE_SECRET not in human.stdout


def test_no_secret_leaks_with_a_password_in_the_broker_url(tmp_path: Path) -> None:
    """A private Redis with ``requirepass``: the password is in every process's broker URL,
    and appears in no reply, banner or log line."""
    password = f"pw-{uuid.uuid4().hex}"
    with (
        private_redis(tmp_path, password) as url,
        tq_worker(tmp_path / "tqsecret.log", name="tqsecret", url=url) as proc,
    ):
        node = f"tqsecret@{HOST}"
        outputs = []
        for command in ("conf", "stats"):
            res = celery_cli("inspect", command, "-d", node, "-t", "10", "--json", url=url)
            no_traceback(res)
            assert res.returncode == 0, res.stdout + res.stderr
            outputs.append(res.stdout)
            reply = node_reply(json.loads(res.stdout), node)
            if command == "conf":
                assert reply["stripe_secret_key"] == "********"
                assert reply["broker_url"] == url.replace(password, "**")
            else:
                assert reply["broker"]["url"] == url.replace(password, "**")
        tq_res = tq_cli("inspect", "conf", "-d", node, "-t", "10", "--json", url=url)
        assert tq_res.returncode == 0, tq_res.stdout + tq_res.stderr
        outputs.append(tq_res.stdout + tq_res.stderr)
        assert tq_pings(node, url)
        log = proc.output()
    for text in (*outputs, log):
        assert password not in text
        assert ctl_tasks.FAKE_SECRET not in text
    assert "redis://:**@127.0.0.1" in log  # the banner shows the masked URL


def test_celery_inspect_active_then_control_terminate(
    own_worker: Callable[[str], tuple[Proc, str]],
) -> None:
    """``inspect active`` lists a running tq task; ``control terminate SIGTERM <id>`` (Celery's
    ``revoke --terminate``) kills it, REVOKED 'terminated' is stored and Celery reads it."""
    proc, node = own_worker("tqterm")
    res = celery_app().send_task("rc.sleep", args=[30], queue="tqterm_q")

    def running() -> bool:
        got = celery_inspect(node).active() or {}
        return any(t["id"] == res.id for t in got.get(node, []))

    wait_for(running, 20.0, "the sleep task to run", proc.log)
    active = node_reply(celery_json("inspect", "active", node=node), node)
    (info,) = [t for t in active if t["id"] == res.id]
    assert (info["name"], info["type"], info["args"], info["kwargs"]) == (
        "rc.sleep",
        "rc.sleep",
        [30],
        {},
    )
    assert info["hostname"] == node and info["acknowledged"] is True
    assert time.time() - 60 < info["time_start"] <= time.time()
    assert info["delivery_info"]["routing_key"] == "tqterm_q"
    before = stats_of(node)["pool"]["processes"]
    assert info["worker_pid"] in before, "the pid of the child running it, as Celery reports"
    # Flower asks with safe=True: args and kwargs come as the client's reprs.
    safe = (celery_inspect(node).active(safe=True) or {}).get(node, [])
    assert [(t["args"], t["kwargs"]) for t in safe if t["id"] == res.id] == [("[30]", "{}")]

    started = time.monotonic()
    reply = node_reply(celery_json("control", "terminate", "SIGTERM", res.id, node=node), node)
    assert reply == {"ok": f"terminate: {res.id}"}
    result = wait_celery_state(res.id, "REVOKED", 20.0, proc.log)
    assert time.monotonic() - started < 25.0, "the 30 s task was not cut short"
    assert str(result.result) == "terminated"
    assert type(result.result).__name__ == "TaskRevokedError"
    assert res.id in node_reply(celery_json("inspect", "revoked", node=node), node)
    # The killed child is replaced: two processes again, and the worker still answers.
    wait_for(
        lambda: len(stats_of(node)["pool"]["processes"]) == 2, 20.0, "the pool to refill", proc.log
    )
    after = stats_of(node)["pool"]["processes"]
    assert info["worker_pid"] not in after and len(set(before) & set(after)) == 1
    assert proc.alive()


def test_celery_inspect_scheduled_then_control_revoke(worker: Proc, db: redis.Redis) -> None:
    marker = f"ran-{uuid.uuid4()}"
    res = celery_app().send_task("rc.touch", args=[marker], countdown=120)

    def scheduled() -> bool:
        got = celery_inspect().scheduled() or {}
        return any(e["request"]["id"] == res.id for e in got.get(TQ_NODE, []))

    wait_for(scheduled, 20.0, "the countdown task to be held", worker.log)
    entries = node_reply(celery_json("inspect", "scheduled"))
    (entry,) = [e for e in entries if e["request"]["id"] == res.id]
    eta = dt.datetime.fromisoformat(entry["eta"])
    assert eta.tzinfo is not None
    assert 60 < (eta - dt.datetime.now(dt.UTC)).total_seconds() <= 125
    assert entry["request"]["name"] == "rc.touch" and entry["request"]["args"] == [marker]
    assert isinstance(entry["priority"], int)

    reply = node_reply(celery_json("control", "revoke", res.id))
    assert reply == {"ok": f"tasks {{'{res.id}'}} flagged as revoked"}
    assert res.id in node_reply(celery_json("inspect", "revoked"))
    wait_celery_state(res.id, "REVOKED", 20.0, worker.log)
    assert db.get(marker) is None


def test_celery_inspect_reserved_and_control_rate_limit(worker: Proc, db: redis.Redis) -> None:
    """``control rate_limit rc.touch 1/m`` holds back all but the first task (they show in
    ``inspect reserved``); ``inspect registered rate_limit`` shows the new limit, as Celery's
    worker does; ``rate_limit rc.touch 0`` lets the rest run."""
    reply = node_reply(celery_json("control", "rate_limit", "rc.touch", "1/m"))
    assert reply == {"ok": "new rate limit set successfully"}
    try:
        info = node_reply(celery_json("inspect", "registered", "rate_limit"))
        assert "rc.touch [rate_limit=1/m]" in info
        markers = [f"rl-{uuid.uuid4()}" for _ in range(3)]
        ids = [celery_app().send_task("rc.touch", args=[m]).id for m in markers]
        wait_for(lambda: db.get(markers[0]), 20.0, "the first task to run", worker.log)

        def held() -> set[str]:
            got = celery_inspect().reserved() or {}
            return {t["id"] for t in got.get(TQ_NODE, [])} & set(ids[1:])

        wait_for(held, 20.0, "the rate-limited tasks to show as reserved", worker.log)
        reserved = node_reply(celery_json("inspect", "reserved"))
        waiting = [t for t in reserved if t["id"] in ids[1:]]
        assert waiting, reserved
        for t in waiting:
            assert t["name"] == "rc.touch" and t["acknowledged"] is False
            assert t["time_start"] is None and t["worker_pid"] is None
            assert t["args"] == [markers[ids.index(t["id"])]]  # JSON values, as Celery's
        assert db.get(markers[1]) is None and db.get(markers[2]) is None
    finally:
        reply = node_reply(celery_json("control", "rate_limit", "rc.touch", "0"))
    # Celery's CLI sends "0" as a string, which Celery's worker too answers this way.
    assert reply == {"ok": "new rate limit set successfully"}
    for task_id in ids:
        wait_celery_state(task_id, "SUCCESS", 20.0, worker.log)
    assert all(db.get(m) == b"ran" for m in markers)


def test_celery_control_pool_grow_and_shrink(
    own_worker: Callable[[str], tuple[Proc, str]],
) -> None:
    proc, node = own_worker("tqpool")
    size = stats_of(node)["pool"]["max-concurrency"]
    reply = node_reply(celery_json("control", "pool_grow", "1", node=node), node)
    assert reply == {"ok": "pool will grow"}
    wait_for(
        lambda: stats_of(node)["pool"]["max-concurrency"] == size + 1,
        20.0,
        "the pool to grow",
        proc.log,
    )
    wait_for(
        lambda: len(stats_of(node)["pool"]["processes"]) == size + 1,
        20.0,
        "a child process to start",
        proc.log,
    )
    reply = node_reply(celery_json("control", "pool_shrink", "1", node=node), node)
    assert reply == {"ok": "pool will shrink"}
    wait_for(
        lambda: stats_of(node)["pool"]["max-concurrency"] == size,
        20.0,
        "the pool to shrink",
        proc.log,
    )
    wait_for(
        lambda: len(stats_of(node)["pool"]["processes"]) == size,
        20.0,
        "a child process to stop",
        proc.log,
    )


def test_celery_control_add_and_cancel_consumer(worker: Proc, db: redis.Redis) -> None:
    queue = f"extra-{uuid.uuid4().hex[:6]}"

    def queue_names() -> list[str]:
        got = celery_inspect().active_queues() or {}
        return [q["name"] for q in got.get(TQ_NODE, [])]

    reply = node_reply(celery_json("control", "add_consumer", queue))
    assert reply == {"ok": f"add consumer {queue}"}
    assert queue in queue_names()
    first = f"q1-{uuid.uuid4()}"
    res = celery_app().send_task("rc.touch", args=[first], queue=queue)
    wait_celery_state(res.id, "SUCCESS", 20.0, worker.log)
    assert db.get(first) == b"ran"

    reply = node_reply(celery_json("control", "cancel_consumer", queue))
    assert reply == {"ok": f"no longer consuming from {queue}"}
    assert queue not in queue_names() and "celery" in queue_names()
    second = f"q2-{uuid.uuid4()}"
    res2 = celery_app().send_task("rc.touch", args=[second], queue=queue)
    wait_for(lambda: db.llen(queue) == 1, 10.0, "the message to reach the queue")
    time.sleep(2.0)  # a consumer would have taken it by now
    assert db.llen(queue) == 1 and db.get(second) is None
    assert celery_state(res2.id) == "PENDING"
    db.delete(queue)


def test_celery_control_disable_and_enable_events(worker: Proc) -> None:
    tap = EventTap()
    try:
        reply = node_reply(celery_json("control", "disable_events"))
        assert reply == {"ok": "task events disabled"}
        quiet = celery_app().send_task("rc.add", args=[1, 2])
        wait_celery_state(quiet.id, "SUCCESS", 20.0, worker.log)
        tap.poll(2.0)
        assert tap.of(quiet.id) == []
        assert any(
            e["type"] == "worker-heartbeat" and e["hostname"] == TQ_NODE for e in tap.events
        ), "worker events go on without task events"

        reply = node_reply(celery_json("control", "enable_events"))
        assert reply == {"ok": "task events enabled"}
        loud = celery_app().send_task("rc.add", args=[3, 4])
        wait_celery_state(loud.id, "SUCCESS", 20.0, worker.log)
        tap.until(lambda: "task-succeeded" in tap.of(loud.id), 10.0, "the task events")
        assert tap.of(loud.id)[:3] == ["task-received", "task-started", "task-succeeded"]
    finally:
        tap.close()


def test_celery_control_shutdown_stops_a_tq_worker(db: redis.Redis, tmp_path: Path) -> None:
    with tq_worker(tmp_path / "tqdown.log", name="tqdown") as proc:
        node = f"tqdown@{HOST}"
        res = celery_cli("control", "shutdown", "-d", node, "-t", "2")
        no_traceback(res)
        # Celery workers do not answer shutdown, and neither does tq: Celery's CLI says so.
        assert "No nodes replied" in res.stdout + res.stderr
        wait_for(lambda: not proc.alive(), 30.0, f"{node} to exit", proc.log)
        assert proc.popen.returncode == 0
        assert "Got shutdown from remote control" in proc.output()
        assert not tq_pings(node)


def test_celery_events_dump_prints_tq_task_events(worker: Proc, tmp_path: Path) -> None:
    dump = Proc(
        [sys.executable, "-m", "celery", "-A", CELERY_APP, "events", "--dump"],
        tmp_path / "dump.log",
        child_env(),
    )
    try:
        wait_for(
            lambda: "starting capture" in dump.output(), 60.0, "celery events to start", dump.log
        )
        # Its start-up ``heartbeat`` broadcast makes the worker send one at once.
        wait_for(
            lambda: f"{TQ_NODE} [" in dump.output() and "heartbeat" in dump.output(),
            20.0,
            "a tq worker heartbeat in the dump",
            dump.log,
        )
        ok = celery_app().send_task("rc.add", args=[2, 3])
        bad = celery_app().send_task("rc.fail", args=["boom"])
        wait_celery_state(ok.id, "SUCCESS", 20.0, worker.log)
        wait_celery_state(bad.id, "FAILURE", 20.0, worker.log)

        def printed() -> bool:
            text = dump.output()
            return f"task succeeded: rc.add({ok.id})" in text and f"({bad.id})" in text

        wait_for(printed, 20.0, "the task events in the dump", dump.log)
    finally:
        dump.stop(10.0)
    lines = dump.output().splitlines()
    mine = [line for line in lines if ok.id in line]
    assert [line.split("] ", 1)[1].split(":")[0] for line in mine] == [
        "task received",
        "task started",
        "task succeeded",
    ]
    assert all(line.startswith(f"{TQ_NODE} [") for line in mine)
    assert "args=[2, 3]" in mine[0] and "result=5" in mine[2]  # argsrepr of a list
    failed = [line for line in lines if bad.id in line and "task failed" in line]
    assert failed and "ValueError('boom')" in failed[0]
    assert "Traceback" not in "\n".join(line for line in lines if "evdump" in line)


# -- tq-console → real Celery worker ---------------------------------------------------------
def test_tq_console_inspect_answered_by_celery(cworker: Proc) -> None:
    ping = tq_cli("inspect", "ping", "-d", CELERY_NODE, "-t", "10", "--json")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert json.loads(ping.stdout) == {CELERY_NODE: {"ok": "pong"}}

    stats = tq_cli("inspect", "stats", "-d", CELERY_NODE, "-t", "10", "--json")
    assert stats.returncode == 0, stats.stdout + stats.stderr
    got = json.loads(stats.stdout)[CELERY_NODE]
    assert got["pid"] == cworker.pid and got["pool"]["max-concurrency"] == 1
    assert got["broker"]["transport"] == "redis" and "total" in got

    # A solo worker answers only between tasks, so ``active`` is asked while it is idle.
    active = tq_cli("inspect", "active", "-d", CELERY_NODE, "-t", "10", "--json")
    assert active.returncode == 0, active.stdout + active.stderr
    assert json.loads(active.stdout) == {CELERY_NODE: []}

    human = tq_cli("inspect", "ping", "-d", CELERY_NODE, "-t", "10")
    assert human.returncode == 0
    assert f"->  {CELERY_NODE}: OK" in human.stdout and "1 node online." in human.stdout
    for res in (ping, stats, active, human):
        no_traceback(res)


def test_tq_console_revoke_honoured_by_celery(cworker: Proc, db: redis.Redis) -> None:
    """Revoke an id with ``tq-console control revoke``; when the task then reaches the Celery
    worker it is discarded (REVOKED stored by Celery), never run."""
    task_id = str(uuid.uuid4())
    marker = f"cv-{uuid.uuid4()}"
    res = tq_cli("control", "revoke", task_id, "-d", CELERY_NODE, "-t", "10", "--json")
    no_traceback(res)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout) == {
        CELERY_NODE: {"ok": f"tasks {{'{task_id}'}} flagged as revoked"}
    }
    assert task_id in (celery_inspect(CELERY_NODE).revoked() or {}).get(CELERY_NODE, [])
    celery_app().send_task("rc.touch", args=[marker], task_id=task_id, queue=CELERY_QUEUE)
    wait_celery_state(task_id, "REVOKED", 30.0, cworker.log)
    done = celery_app().send_task("rc.add", args=[1, 1], queue=CELERY_QUEUE)
    wait_celery_state(done.id, "SUCCESS", 30.0, cworker.log)  # the worker moved past it
    assert db.get(marker) is None
    assert "Discarding revoked task" in cworker.output() or task_id in cworker.output()
