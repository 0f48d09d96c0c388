"""The fault suite's machinery: private redis-server processes that a test can shut down, kill,
freeze and restart on the same port and directory; the counting ledger; and worker
subprocesses (``tq-console --worker -A tests.faults.fault_tasks:app``) with their own
environment (``TQ_FAULT`` …) that a test can SIGTERM, SIGQUIT or SIGKILL.

Nothing here touches the shared Redis on 127.0.0.1:6379: every server is started on a free
port in a temporary directory and stopped by the fixture that made it.

Waiting is always bounded (``wait_until``); no helper sleeps hoping something happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
import redis

from tq import App
from tq.protocol.message import TaskSpec, build_task

ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVER = "/usr/bin/redis-server"
TQ_CONSOLE = str(Path(sys.executable).parent / "tq-console")
APP_SPEC = "tests.faults.fault_tasks:app"
#: Seconds a redis-server or a worker gets to come up.
START_TIMEOUT_S = 30.0
#: Extra time after a drain looks complete, so late duplicates are seen (RELIABILITY.md: grace).
GRACE_S = 1.0

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port nobody listens on right now (never 6379)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != 6379:
            return port


# -- redis-server -----------------------------------------------------------------------------
class RedisServer:
    """A private redis-server on a free loopback port, in its own directory.

    Args:
        directory: its working directory (AOF, logs); kept across restarts.
        persistent: ``--appendonly yes --appendfsync always --save ''`` (RELIABILITY.md's
            default for every row); otherwise no persistence at all.
        extra: more ``--option value`` arguments (``--requirepass``, ``--replicaof`` …).
        sentinel: run as a sentinel with the config file ``directory/sentinel.conf``.
    """

    def __init__(
        self,
        directory: Path,
        persistent: bool = True,
        extra: Sequence[str] = (),
        port: int | None = None,
        password: str | None = None,
        sentinel: bool = False,
    ) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.persistent = persistent
        self.extra = list(extra)
        self.password = password
        self.sentinel = sentinel
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "redis.log"

    def argv(self) -> list[str]:
        if self.sentinel:
            head = [REDIS_SERVER, str(self.directory / "sentinel.conf"), "--sentinel"]
        else:
            head = [REDIS_SERVER]
        argv = [
            *head,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.log),
            "--daemonize",
            "no",
        ]
        if not self.sentinel:
            if self.persistent:
                argv += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
            else:
                argv += ["--appendonly", "no", "--save", ""]
        if self.password:
            argv += ["--requirepass", self.password]
        return argv + self.extra

    def start(self) -> None:
        """Start (or restart, same port and directory) and wait until it answers PING."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            self.argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"redis-server on {self.port} exited with "
                    f"{self.proc.returncode}: {self.log_tail()}"
                )
            if self.answers():
                return
            if time.monotonic() > deadline:
                self.stop()  # never leave a half-started server behind
                raise AssertionError(f"redis-server on {self.port} did not start")
            time.sleep(0.02)

    def answers(self) -> bool:
        client = redis.Redis(
            port=self.port, password=self.password, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def client(self, **kwargs: Any) -> redis.Redis:
        kwargs.setdefault("socket_timeout", 10)
        return redis.Redis(port=self.port, password=self.password, **kwargs)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def shutdown(self) -> None:
        """``SHUTDOWN`` (AOF flushed, no RDB with ``--save ''``); waits for the exit."""
        client = self.client(socket_timeout=5)
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown(nosave=not self.persistent)
        client.close()
        self.wait_exit()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (SIGKILL waits for the exit; SIGSTOP/SIGCONT return at once)."""
        if self.is_running():
            os.kill(self.pid, sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.wait_exit()

    def wait_exit(self, timeout: float = 15.0) -> None:
        assert self.proc is not None
        self.proc.wait(timeout)

    def stop(self) -> None:
        """Teardown: thaw a frozen server, then kill it."""
        if self.is_running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGKILL)
            assert self.proc is not None
            self.proc.wait(10)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text("utf-8", "replace")[-n:]
        except OSError:
            return "(no log)"


# -- the ledger -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Counts:
    """The figures of one run (RELIABILITY.md section 3 definitions)."""

    sent: int
    completed: int
    lost: int  # ids with done == 0
    dup: int  # sum of max(0, exec - 1)
    stranded: int  # HLEN unacked after the drain
    lost_ids: tuple[str, ...] = ()
    queued: int = 0  # still on the queue lists after the drain

    def figures(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "completed": self.completed,
            "lost": self.lost,
            "dup": self.dup,
            "stranded": self.stranded,
        }

    def line(self) -> str:
        return (
            f"sent={self.sent} completed={self.completed} lost={self.lost} "
            f"dup={self.dup} stranded={self.stranded} queued={self.queued}"
        )


class Ledger:
    """Reads the counts tasks wrote on the ledger server."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def _many(self, key: str, ids: Sequence[str]) -> list[int]:
        out: list[int] = []
        for start in range(0, len(ids), 5000):
            chunk = list(ids[start : start + 5000])
            out += [int(v or 0) for v in self.client.hmget(key, chunk)]
        return out

    def execs(self, ids: Sequence[str]) -> list[int]:
        return self._many("exec", ids)

    def dones(self, ids: Sequence[str]) -> list[int]:
        return self._many("done", ids)

    def exec_of(self, task_id: str) -> int:
        return int(self.client.hget("exec", task_id) or 0)

    def done_of(self, task_id: str) -> int:
        return int(self.client.hget("done", task_id) or 0)

    def pid_of(self, task_id: str) -> int | None:
        raw = self.client.hget("pid", task_id)
        return int(raw) if raw else None

    def started_at(self, task_id: str) -> float | None:
        raw = self.client.hget("started_at", task_id)
        return float(raw) if raw else None

    def redelivered(self, task_id: str) -> int:
        return int(self.client.hget("redelivered", task_id) or 0)

    def done_count(self) -> int:
        return int(self.client.hlen("done"))

    def exec_count(self) -> int:
        return int(self.client.hlen("exec"))

    def attempts(self) -> dict[str, int]:
        raw: dict[bytes, bytes] = self.client.hgetall("attempts")  # type: ignore[assignment]
        return {k.decode(): int(v) for k, v in raw.items()}

    def all_done(self, ids: Sequence[str]) -> bool:
        return all(self.dones(ids))

    def counts(
        self, ids: Sequence[str], broker: redis.Redis | None = None, unacked_key: str = "unacked"
    ) -> Counts:
        execs = self.execs(ids)
        dones = self.dones(ids)
        lost_ids = tuple(i for i, d in zip(ids, dones, strict=True) if d == 0)
        stranded = int(broker.hlen(unacked_key)) if broker is not None else 0
        return Counts(
            sent=len(ids),
            completed=sum(1 for d in dones if d),
            lost=len(lost_ids),
            dup=sum(max(0, e - 1) for e in execs),
            stranded=stranded,
            lost_ids=lost_ids[:10],
        )


# -- publishing -------------------------------------------------------------------------------
def publish_many(
    app: App,
    name: str,
    n: int,
    args: Iterable[Any] = (),
    kwargs: dict[str, Any] | None = None,
    queue: str = "celery",
    **spec_options: Any,
) -> list[str]:
    """Publish ``n`` task messages in pipelined batches; returns their ids (the id list is
    saved at publish time, as the counting rules ask)."""
    ids: list[str] = []
    batch: list[tuple[str, str, int]] = []
    for _ in range(n):
        task_id = str(uuid.uuid4())
        spec = TaskSpec(
            name=name,
            id=task_id,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            queue=queue,
            **spec_options,
        )
        _tag, envelope = build_task(spec)
        batch.append((envelope, queue, 0))
        ids.append(task_id)
        if len(batch) >= 500:
            app.transport.publish_many(batch)
            batch = []
    if batch:
        app.transport.publish_many(batch)
    return ids


# -- worker subprocesses ----------------------------------------------------------------------
class Worker:
    """One ``tq-console --worker`` subprocess (its own session: killpg reaches its children)."""

    def __init__(
        self, proc: subprocess.Popen[bytes], nodename: str, log: Path, started: float
    ) -> None:
        self.proc = proc
        self.nodename = nodename
        self.log = log
        self.started = started

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text("utf-8", "replace")

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.output()))

    def children(self) -> list[int]:
        try:
            return [p.pid for p in psutil.Process(self.pid).children()]
        except psutil.Error:
            return []

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def kill_all(self) -> None:
        """SIGKILL the controller and its children at once (the process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(10)
        # orphaned children notice the closed pipe and leave; make sure they are gone
        for p in _group_members(self.pid):
            with contextlib.suppress(psutil.Error):
                p.kill()

    def wait(self, timeout: float) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.proc.wait(timeout)
        return None

    def is_alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Teardown: SIGKILL the group (the test is over; its broker goes next)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        for p in _group_members(self.pid):
            with contextlib.suppress(psutil.Error):
                p.kill()


def _group_members(pgid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


def worker_env(
    broker_url: str,
    ledger_url: str,
    vt: float | None = None,
    settings: dict[str, Any] | None = None,
    transport: dict[str, Any] | None = None,
    **extra: str,
) -> dict[str, str]:
    """The environment of a worker subprocess (``TQ_FAULT`` and friends go in ``extra``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "TQ_"))}
    env.update(
        TQ_FAULT_BROKER=broker_url,
        TQ_FAULT_LEDGER=ledger_url,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    if vt is not None:
        env["TQ_FAULT_VT"] = str(vt)
    if settings:
        env["TQ_FAULT_SETTINGS"] = json.dumps(settings)
    if transport:
        env["TQ_FAULT_TRANSPORT"] = json.dumps(transport)
    env.update(extra)
    return env


def meta_of(app: App, task_id: str) -> dict[str, Any]:
    """The stored result meta of ``task_id`` (the fault apps always have a backend)."""
    backend = app.backend
    assert backend is not None
    return backend.get_meta(task_id)


def is_answering(app: App, nodename: str, timeout: float = 0.5) -> bool:
    try:
        replies = app.control.inspect(destination=[nodename], timeout=timeout).ping()
    except Exception:
        return False
    return bool(replies and nodename in replies)


# -- the rig: one test's servers, apps and workers --------------------------------------------
class Rig:
    """Everything one test starts, stopped in reverse at teardown.

    ``rig.broker`` is a private, AOF-persistent broker started for the test; ``rig.ledger``
    counts on the (session) ledger server, emptied before the test.
    """

    def __init__(self, tmp: Path, ledger_server: RedisServer, ledger: Ledger) -> None:
        self.tmp = tmp
        self.ledger_server = ledger_server
        self.ledger = ledger
        self.servers: list[RedisServer] = []
        self.workers: list[Worker] = []
        self.apps: list[App] = []
        self.broker = self.server("broker")

    # -- parts --------------------------------------------------------------------------------
    def server(self, name: str, start: bool = True, **options: Any) -> RedisServer:
        srv = RedisServer(self.tmp / name, **options)
        self.servers.append(srv)
        if start:
            srv.start()
        return srv

    def app(
        self,
        vt: float | None = None,
        settings: dict[str, Any] | None = None,
        transport: dict[str, Any] | None = None,
        broker_url: str | None = None,
    ) -> App:
        from tests.faults.fault_tasks import make_app

        made = make_app(broker_url or self.broker.url(), vt, settings, transport)
        self.apps.append(made)
        return made

    def worker(
        self,
        name: str | None = None,
        concurrency: int = 2,
        pool: str = "prefork",
        vt: float | None = None,
        settings: dict[str, Any] | None = None,
        transport: dict[str, Any] | None = None,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        wait: bool = True,
        broker_url: str | None = None,
        loglevel: str = "INFO",
    ) -> Worker:
        """Start ``tq-console --worker``; with ``wait`` return once it answers ``ping``."""
        name = name or f"w{uuid.uuid4().hex[:6]}"
        nodename = f"{name}@{socket.gethostname()}"
        url = broker_url or self.broker.url()
        log = self.tmp / f"{name}-{len(self.workers)}.log"
        cmd = [
            TQ_CONSOLE,
            "--worker",
            "-A",
            APP_SPEC,
            "-c",
            str(concurrency),
            "-P",
            pool,
            "-n",
            nodename,
            "-l",
            loglevel,
            *args,
        ]
        full_env = worker_env(url, self.ledger_server.url(), vt, settings, transport, **(env or {}))
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        w = Worker(proc, nodename, log, time.monotonic())
        self.workers.append(w)
        if wait:
            self.wait_ready(w, self.app(vt, settings, transport, url))
        return w

    def wait_ready(self, w: Worker, app: App, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not w.is_alive():
                raise AssertionError(
                    f"worker exited with {w.proc.returncode}:\n{w.output()[-4000:]}"
                )
            if is_answering(app, w.nodename):
                return
        raise AssertionError(f"{w.nodename} did not answer ping:\n{w.output()[-4000:]}")

    # -- reading the broker -------------------------------------------------------------------
    def queue_length(self, app: App, queue: str = "celery") -> int:
        return app.transport.queue_length(queue)

    def unacked(self, app: App) -> int:
        return int(self.broker.client().hlen(app.transport.keys.unacked))

    def dead(self, app: App) -> list[tuple[dict[str, Any], bytes]]:
        return app.transport.dead_letters(0, -1)

    def drain(
        self,
        app: App,
        ids: Sequence[str],
        timeout: float,
        grace: float = GRACE_S,
        quiet: float = 5.0,
    ) -> Counts:
        """Wait until every id is done and the queue and the unacked hash are empty, or until
        they are empty and no task finished for ``quiet`` seconds (tasks lost for good), or
        ``timeout``; then ``grace`` more seconds. Returns the counts."""
        client = self.broker.client()
        key = app.transport.keys.unacked
        last = {"done": -1, "since": time.monotonic()}

        def settled() -> bool:
            try:
                done = self.ledger.done_count()
                if done != last["done"]:
                    last.update(done=done, since=time.monotonic())
                empty = app.transport.queue_length("celery") == 0 and int(client.hlen(key)) == 0
            except Exception:  # the broker may be down in the middle of a fault
                return False
            if not empty:
                return False
            return self.ledger.all_done(ids) or time.monotonic() - last["since"] > quiet

        with contextlib.suppress(AssertionError):
            wait_until(settled, timeout, "the drain", interval=0.1)
        time.sleep(grace)
        try:
            counts = self.ledger.counts(ids, client, key)
            queued = app.transport.queue_length("celery")
        finally:
            client.close()
        return Counts(
            counts.sent,
            counts.completed,
            counts.lost,
            counts.dup,
            counts.stranded,
            counts.lost_ids,
            queued,
        )

    def logs(self) -> str:
        """Every worker's output (for assertion messages)."""
        return "\n".join(f"--- {w.nodename} ---\n{w.output()[-3000:]}" for w in self.workers)

    def close(self) -> None:
        for w in reversed(self.workers):
            w.stop()
        for a in self.apps:
            with contextlib.suppress(Exception):
                a.close()
        for srv in reversed(self.servers):
            srv.stop()
