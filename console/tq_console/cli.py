"""The ``tq-console`` command: the console (default), ``--worker`` (headless runtime),
``--demo``, and the management commands (inspect, control, status, purge, result, call,
queues, dead, beat).

Exit codes: 0 success; 1 a command ran and failed (no reply, task failed, nothing matched);
2 bad usage (click's); 3 the broker could not be reached; 4 the app could not be loaded.
Textual is imported only on the TUI path, so ``--worker`` starts without it.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

from tq_console import __version__

HELP_APP = "The app to use: 'module:attribute' or 'module' (looks for 'app' then 'celery')."
HELP_WORKER = "Run the worker headless (like 'celery worker'), without the console UI."
HELP_DEMO = (
    "Run the demo tasks with a generated load; starts an embedded Valkey if no broker is set."
)
HELP_MONITOR = "Run no local worker: watch the cluster through events and remote control."
HELP_BROKER = "Broker URL (overrides the app's broker_url and TQ_BROKER_URL)."
HELP_CONCURRENCY = "Number of child processes (default: number of CPUs)."
HELP_QUEUES = "Comma-separated list of queues to consume (default: the app's default queue)."
HELP_POOL = "Pool implementation: prefork (default), solo or threads."
HELP_READ_ONLY = "Start the console with every mutating key unbound."

EXIT_FAILED = 1
EXIT_BROKER = 3
EXIT_APP = 4

logger = logging.getLogger("tq_console")


class AppNotLoadable(click.ClickException):
    """``-A`` names no importable tq app (exit code 4)."""

    exit_code = EXIT_APP


def use_urls(app: Any, broker: str | None, backend: str | None) -> None:
    """Point ``app`` at ``--broker`` / ``--result-backend``. The settings let ``TQ_BROKER_URL``
    and ``TQ_RESULT_BACKEND`` win over everything, so the flags set them too (children see the
    same URLs)."""
    if broker:
        os.environ["TQ_BROKER_URL"] = broker
        app.conf.broker_url = broker
    if backend:
        os.environ["TQ_RESULT_BACKEND"] = backend
        app.conf.result_backend = backend


def load_app(spec: str | None) -> Any:
    """Import the app named by ``-A``; exits with code 4 and a clear message on failure."""
    from tq import App

    if not spec:
        spec = os.environ.get("TQ_APP")
    if not spec:
        return App("tq")
    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppNotLoadable(f"cannot import app module {module_name!r}: {exc}") from exc
    names = [attr] if attr else ["app", "celery"]
    for name in names:
        app = getattr(module, name, None)
        if isinstance(app, App):
            app.import_path = f"{module_name}:{name}"
            return app
    raise AppNotLoadable(
        f"{spec!r} has no tq App (looked for {', '.join(names)} in module {module_name})"
    )


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="[%(asctime)s: %(levelname)s/%(processName)s] %(message)s",
    )


def log_to_file() -> str:
    """While the console owns the terminal, log lines go to a file (returned) instead."""
    from tq_console.embedded import data_dir

    path = data_dir().parent / "console.log"
    root = logging.getLogger()
    handler = logging.FileHandler(path)
    handler.setFormatter(
        logging.Formatter("[%(asctime)s: %(levelname)s/%(processName)s] %(message)s")
    )
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    return str(path)


def banner(runtime: Any) -> str:
    from tq.transport.connection import mask_url

    app = runtime.app
    o = runtime.options
    tasks = "\n".join(f"  . {name}" for name in app.tasks.names()) or "  (none)"
    events = "ON" if runtime.events.task_events else "OFF"
    return (
        f"\n -------------- {o.hostname} v{__version__} (tq)\n"
        f"--- ***** -----\n"
        f"-- ******* ---- {sys.platform}\n"
        f"- *** --- * --- \n"
        f"- ** ---------- [config]\n"
        f"- ** ---------- .> app:         {app.main or '__main__'}\n"
        f"- ** ---------- .> transport:   {mask_url(app.conf.broker_url)}\n"
        f"- ** ---------- .> results:     {mask_url(app.conf.result_backend) or 'disabled://'}\n"
        f"- *** --- * --- .> concurrency: {o.concurrency} ({o.pool})\n"
        f"-- ******* ---- .> task events: {events}\n"
        f"--- ***** ----- \n"
        f" -------------- [queues]\n"
        + "\n".join(f"                .> {q}" for q in runtime.queues)
        + f"\n\n[tasks]\n{tasks}\n"
    )


def build_runtime(app: Any, opts: dict[str, Any], embed: bool) -> Any:
    """The worker Runtime the flags describe (``embed``: inside the console)."""
    from tq.worker.runtime import Runtime, RuntimeOptions

    autoscale = None
    if opts.get("autoscale"):
        try:
            high, _, low = opts["autoscale"].partition(",")
            autoscale = (int(high), int(low or 0))
        except ValueError as exc:
            raise click.BadParameter("use --autoscale MAX,MIN, e.g. 8,2") from exc
    queues = [q.strip() for q in (opts.get("queues") or "").split(",") if q.strip()]
    return Runtime(
        app,
        RuntimeOptions(
            concurrency=opts.get("concurrency"),
            pool=opts.get("pool") or "prefork",
            queues=queues,
            hostname=opts.get("hostname") or "",
            task_events=True if opts.get("events") else None,
            autoscale=autoscale,
            optimization=opts.get("optimization") or "default",
            beat=bool(opts.get("beat")),
            install_signal_handlers=not embed,
            max_tasks_per_child=opts.get("max_tasks_per_child"),
            max_memory_per_child=opts.get("max_memory_per_child"),
            prefetch_multiplier=opts.get("prefetch_multiplier"),
            soft_shutdown_timeout=opts.get("soft_shutdown_timeout"),
            watch_cluster=embed,
        ),
    )


def check_broker(app: Any) -> None:
    """Fail fast (exit 3) with a clear message when the broker does not answer."""
    from tq.exceptions import TransportError
    from tq.transport.connection import mask_url

    try:
        app.transport.ping()
    except (TransportError, Exception) as exc:
        click.echo(
            f"Error: cannot reach the broker at {mask_url(app.conf.broker_url)}: {exc}\n"
            "Start Redis, or pass --broker redis://host:6379/0 (or --demo for an embedded one).",
            err=True,
        )
        sys.exit(EXIT_BROKER)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-A", "--app", "app_spec", help=HELP_APP)
@click.option("-b", "--broker", help=HELP_BROKER)
@click.option("--result-backend", "backend", help="Result backend URL.")
@click.option("--worker", "headless", is_flag=True, help=HELP_WORKER)
@click.option("--demo", is_flag=True, help=HELP_DEMO)
@click.option("--monitor", is_flag=True, help=HELP_MONITOR)
@click.option("--read-only", is_flag=True, help=HELP_READ_ONLY)
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help=HELP_CONCURRENCY)
@click.option("-Q", "--queues", help=HELP_QUEUES)
@click.option("-n", "--hostname", help="Node name, e.g. w1@%h.")
@click.option(
    "-l",
    "--loglevel",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
)
@click.option(
    "-P",
    "--pool",
    type=click.Choice(["prefork", "solo", "threads"]),
    default="prefork",
    show_default=True,
    help=HELP_POOL,
)
@click.option("-E", "--task-events", "events", is_flag=True, help="Send task events.")
@click.option("-B", "--beat", is_flag=True, help="Embed the beat scheduler.")
@click.option("-O", "optimization", type=click.Choice(["default", "fair"]), default="default")
@click.option("--autoscale", help="MAX,MIN processes, scaled by backlog.")
@click.option("--prefetch-multiplier", type=click.IntRange(min=0))
@click.option("--max-tasks-per-child", type=click.IntRange(min=1))
@click.option("--max-memory-per-child", type=click.IntRange(min=1), help="KiB.")
@click.option(
    "--soft-shutdown-timeout",
    type=click.FloatRange(min=0),
    help="On a cold shutdown, seconds running tasks get to finish first (default 0).",
)
@click.option("--metrics-port", type=click.IntRange(1, 65535), help="Serve Prometheus metrics.")
@click.version_option(__version__, prog_name="tq-console")
@click.pass_context
def cli(ctx: click.Context, **opts: Any) -> None:
    """tq: Celery-compatible task queue on Redis, with a live operations console."""
    ctx.ensure_object(dict)
    ctx.obj.update(opts)
    if ctx.invoked_subcommand is not None:
        return
    setup_logging(opts["loglevel"])
    embedded = None
    if opts["demo"]:
        from tq_console import demo

        app = demo.app
        if opts["broker"]:
            use_urls(app, opts["broker"], None)
        elif not os.environ.get("TQ_BROKER_URL") and not opts["app_spec"]:
            from tq_console.embedded import EmbeddedBroker

            embedded = EmbeddedBroker()
            url = embedded.start()
            app.conf.broker_url = url
        app.conf.result_backend = opts["backend"] or app.conf.result_backend or app.conf.broker_url
        app.import_path = "tq_console.demo:app"
    else:
        app = load_app(opts["app_spec"])
        use_urls(app, opts["broker"], opts["backend"])
    try:
        check_broker(app)
        code = run_headless(app, opts) if opts["headless"] else run_console(app, opts)
    finally:
        if embedded is not None:
            embedded.stop()
    sys.exit(code)


def _serve_metrics(runtime: Any, opts: dict[str, Any]) -> None:
    if opts.get("metrics_port"):
        from tq.worker.metrics import serve

        serve(runtime, int(opts["metrics_port"]))


def run_headless(app: Any, opts: dict[str, Any]) -> int:
    runtime = build_runtime(app, opts, embed=False)
    click.echo(banner(runtime))
    _serve_metrics(runtime, opts)
    load = _start_demo_load(app, opts)
    try:
        return int(runtime.run())
    finally:
        if load is not None:
            load.stop()


def _start_demo_load(app: Any, opts: dict[str, Any]) -> Any:
    if not opts.get("demo"):
        return None
    from tq_console.demo import LoadGenerator

    load = LoadGenerator(app)
    load.start()
    return load


def run_console(app: Any, opts: dict[str, Any]) -> int:
    click.echo(f"tq-console: logging to {log_to_file()}")
    if opts.get("monitor"):
        from tq.worker.monitor import Monitor

        queues = [q.strip() for q in (opts.get("queues") or "").split(",") if q.strip()]
        runtime = Monitor(app, queues)
    else:
        runtime = build_runtime(app, opts, embed=True)
    runtime.start()  # forks the pool before Textual starts its threads
    _serve_metrics(runtime, opts)
    load = _start_demo_load(app, opts)
    from tq_console.app import ConsoleApp
    from tq_console.bridge import RuntimeBridge

    bridge = RuntimeBridge(runtime)
    console = ConsoleApp(bridge, read_only=bool(opts.get("read_only")))
    try:
        console.run()
    finally:
        if load is not None:
            load.stop()
        if runtime.state != "stopped":
            runtime.stop()
    return 0


def _register_commands() -> None:
    from tq_console.manage import COMMANDS

    for command in COMMANDS:
        cli.add_command(command)


_register_commands()


def main() -> None:
    cli(obj={})
