#!/usr/bin/env python
"""Where tq's time goes per task: py-spy on the controller and a pool child under a drain,
on the producer while it enqueues, and Redis's commandstats for both.

    python tests/bench/profile_tq.py                      # 20,000 tasks, results stored
    python tests/bench/profile_tq.py --ignored            # results ignored
    python tests/bench/profile_tq.py --console            # the worker inside the console (pty)

Same private server and worker command as bench.py. Writes py-spy's raw (collapsed-stack)
files plus a summary (top self and inclusive frames as file:line, per process) into
``--out`` (default: a temporary directory, printed at the end). Feed a raw file to
``flamegraph.pl`` or speedscope for a picture.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench

PY_SPY = str(bench.VENV_BIN / "py-spy")


#: Leaf frames where a thread is blocked, not computing (py-spy's own idle detection does not
#: work in every container, so samples are split here): socket reads and polls, pipe reads,
#: condition and event waits, sleeps.
WAIT_LEAVES = (
    "read_from_socket (redis/_parsers/hiredis.py:192)",
    "_socket_can_read (",
    "Condition.wait (",
    "Event.wait (",
    "_PollLikeSelector.select (",
    "Connection._recv (multiprocessing/connection.py:395)",
    "Connection._poll (",
    "sleep (",
    "wait (multiprocessing/connection.py",
)


def is_wait(leaf: str) -> bool:
    name = leaf.rsplit(".", 1)[-1] if "." in leaf.split(" (")[0] else leaf
    return any(leaf.startswith(w) or name.startswith(w) or f".{w}" in leaf for w in WAIT_LEAVES)


def thread_names(pid: int) -> dict[int, str]:
    """Native thread id → Python thread name, from one ``py-spy dump``."""
    import re

    out = subprocess.run(
        [PY_SPY, "dump", "-p", str(pid)], capture_output=True, text=True, timeout=30
    ).stdout
    return {int(m[1]): m[2] for m in re.finditer(r'^Thread (\d+) \([^)]*\): "(.*)"$', out, re.M)}


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every thread of ``pid``, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def spy(
    pid: int, out: Path, rate: int, blocking: bool, threads: bool, gil: bool = False
) -> subprocess.Popen[bytes]:
    cmd = [PY_SPY, "record", "-p", str(pid), "-f", "raw", "-o", str(out), "-r", str(rate)]
    cmd.append("--gil" if gil else "--idle")
    if not blocking:
        cmd.append("--nonblocking")  # does not pause the target: far less distortion
    if threads:
        cmd.append("--threads")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_spy(p: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        p.send_signal(signal.SIGINT)
    try:
        p.wait(20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


def _frames(stack: str) -> list[str]:
    return [f for f in stack.split(";") if f]


def _short(frame: str) -> str:
    # "name (path/to/file.py:123)" → "name (tq/worker/controller.py:123)"
    name, _, loc = frame.partition(" (")
    loc = loc.rstrip(")")
    for marker in ("site-packages/", "/core/", "/console/", "lib/python3.11/"):
        if marker in loc:
            loc = loc.split(marker, 1)[1]
            break
    return f"{name} ({loc})" if loc else name


def summarize(raw: Path, top: int, per_task: int, within: str | None = None) -> dict[str, Any]:
    """Busy (computing) and waiting samples, per thread, per line and per function.

    ``within``: keep only stacks with a frame whose text contains it (e.g. the producer's send
    loop, leaving out interpreter start-up and imports).
    """
    busy_line: collections.Counter[str] = collections.Counter()
    busy_incl: collections.Counter[str] = collections.Counter()
    busy_thread: collections.Counter[str] = collections.Counter()
    thread_incl: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    wait_where: collections.Counter[str] = collections.Counter()
    total = busy = 0
    if not raw.exists():
        return {"error": f"{raw} missing"}
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        frames = _frames(stack)
        if within is not None and (
            not any(within in f for f in frames) or any("_find_and_load" in f for f in frames)
        ):
            continue
        thread = "-"
        if frames and frames[0].startswith(("thread ", "process ")):
            thread = frames[0].split(": ", 1)[-1] if ": " in frames[0] else frames[0]
            frames = [f for f in frames if not f.startswith(("thread ", "process "))]
        if not frames:
            continue
        total += count
        leaf = _short(frames[-1])
        if is_wait(leaf):
            # where the wait is called from: the innermost tq frame, else the caller
            shorts = [_short(f) for f in frames]
            ours = [f for f in shorts if "(tq/" in f or "(tq_console/" in f or "(bench" in f]
            origin = ours[-1] if ours else (shorts[-2] if len(shorts) > 1 else leaf)
            wait_where[f"[{thread}] {origin}"] += count
            continue
        busy += count
        busy_thread[thread] += count
        busy_line[leaf] += count
        seen = set()
        for f in frames:
            key = _short(f).rsplit(":", 1)[0]  # function + file, not line
            if key not in seen:
                seen.add(key)
                busy_incl[key] += count
                thread_incl[thread][key] += count

    def table(c: collections.Counter[str]) -> list[tuple[str, int, float]]:
        return [(k, v, round(100 * v / max(busy, 1), 1)) for k, v in c.most_common(top)]

    return {
        "samples": total,
        "busy_samples": busy,
        "tasks": per_task,
        "busy_by_thread": table(busy_thread),
        "busy_self_by_line": table(busy_line),
        "busy_inclusive_by_function": table(busy_incl),
        "busy_inclusive_by_thread": {
            t: [
                (k, v, round(100 * v / max(busy, 1), 1))
                for k, v in c.most_common(top + 12)
                if "threading.py" not in k and "(tq-console" not in k and "click/" not in k
            ][:top]
            for t, c in thread_incl.items()
            if busy_thread[t] >= busy * 0.05
        },
        "waiting_by_caller": [
            (k, v, round(100 * v / max(total, 1), 1)) for k, v in wait_where.most_common(top)
        ],
    }


def print_summary(title: str, s: dict[str, Any], rate: int) -> None:
    if "error" in s:
        print(f"\n## {title}: {s['error']}")
        return
    us_task = 1e6 / rate / max(s["tasks"], 1)
    print(
        f"\n## {title}: {s['samples']} samples at {rate} Hz, {s['busy_samples']} busy "
        f"(≈{s['busy_samples'] * us_task:,.0f} µs of CPU per task over {s['tasks']} tasks)"
    )
    for name in (
        "busy_by_thread",
        "busy_self_by_line",
        "busy_inclusive_by_function",
        "waiting_by_caller",
    ):
        rows = s.get(name) or []
        if not rows:
            continue
        print(f"\n{name} (samples, % of busy [of all, for waits], ≈µs per task):")
        for k, v, pct in rows:
            print(f"  {v:7d} {pct:5.1f}% {v * us_task:8.1f}  {k}")
    for thread, rows in (s.get("busy_inclusive_by_thread") or {}).items():
        if thread == "-":
            continue
        print(f"\nbusy inclusive in thread {thread}:")
        for k, v, pct in rows:
            print(f"  {v:7d} {pct:5.1f}% {v * us_task:8.1f}  {k}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=20_000)
    p.add_argument("--concurrency", "-c", type=int, default=2)
    p.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    p.add_argument("--ignored", action="store_true", help="noop_ignored (no result stored)")
    p.add_argument(
        "--blocking",
        action="store_true",
        help="let py-spy pause the target per sample (exact stacks, slower drain)",
    )
    p.add_argument("--console", action="store_true", help="profile tq-console instead of --worker")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", help="directory for raw files and summary.json")
    p.add_argument("--redis-server")
    args = p.parse_args()

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="tq-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    system = bench.SYSTEMS["console" if args.console else "tq"]
    task = "noop_ignored" if args.ignored else "noop"
    server = bench.Server(bench.server_binary(args.redis_server), out)
    b = bench.Bench(server, args.count, args.concurrency, 300, out)
    summary: dict[str, Any] = {
        "count": args.count,
        "task": task,
        "console": args.console,
        "loadavg_start": os.getloadavg(),
    }
    try:
        # 1. the producer, under py-spy from its first instruction (no worker running)
        b.flush(system)
        prod_raw = out / "producer.raw"
        env = system.env(server.port)
        cmd = [
            PY_SPY,
            "record",
            "-f",
            "raw",
            "-o",
            str(prod_raw),
            "-r",
            str(args.rate),
            "--",
            sys.executable,
            str(bench.HERE / "bench.py"),
            "_produce",
            system.name,
            task,
            str(args.count),
        ]
        server.reset_stats()
        proc = subprocess.run(
            cmd, cwd=bench.HERE, env=env, capture_output=True, text=True, timeout=600
        )
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            return 1
        prod = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
        summary["producer_rate_under_pyspy"] = (args.count - 1) / (prod["t_end"] - prod["t_first"])
        summary["producer_redis_calls_per_task"] = {
            k: round(v / args.count, 3) for k, v in server.commandstats().items()
        }
        summary["producer"] = summarize(prod_raw, args.top, args.count, within="role_produce")

        # 2. the worker: controller (all threads) and one child, during a filled drain
        b.stash(system)
        with b.worker(system) as w:
            procs = w.processes()
            time.sleep(0.5)
            root = procs[0]
            kids = [c for c in root.children(recursive=True)]
            names = thread_names(w.pid)
            spies = [
                spy(w.pid, out / "controller.raw", args.rate, args.blocking, True),
                spy(w.pid, out / "controller-gil.raw", args.rate, args.blocking, True, gil=True),
            ]
            for i, kid in enumerate(kids[:2]):
                spies.append(spy(kid.pid, out / f"child{i}.raw", args.rate, args.blocking, False))
            time.sleep(1.5)  # py-spy attach
            cpu0 = thread_cpu(w.pid)
            res = b.drain_filled(system, w, with_results=not args.ignored)
            cpu1 = thread_cpu(w.pid)
            summary["controller_threads_cpu_us_per_task"] = {
                names.get(tid, str(tid)): round(
                    (cpu1[tid] - cpu0.get(tid, 0.0)) / args.count * 1e6, 1
                )
                for tid in cpu1
            }
            time.sleep(0.2)
            for s in spies:
                stop_spy(s)
            summary["drain"] = res
            summary["memory"] = w.memory()
        summary["controller"] = summarize(out / "controller.raw", args.top, args.count)
        summary["controller_gil"] = summarize(out / "controller-gil.raw", args.top, args.count)
        for i in range(2):
            summary[f"child{i}"] = summarize(out / f"child{i}.raw", args.top, args.count)
    finally:
        b.kill_all()
        server.stop()
    summary["loadavg_end"] = os.getloadavg()
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"load {summary['loadavg_start']} → {summary['loadavg_end']}")
    print(
        f"producer (under py-spy): {summary['producer_rate_under_pyspy']:,.0f}/s; Redis calls "
        f"per task {summary['producer_redis_calls_per_task']}"
    )
    print(f"drain (under py-spy): {bench._brief(summary['drain'])}")
    print(f"redis calls per task in the drain: {summary['drain']['redis_calls_per_task']}")
    print(
        f"controller CPU per thread (µs per task, /proc): "
        f"{summary['controller_threads_cpu_us_per_task']}"
    )
    for name in ("producer", "controller_gil", "controller", "child0", "child1"):
        print_summary(name, summary[name], args.rate)
    print(f"\nraw files and summary.json in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
