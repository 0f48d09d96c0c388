"""The management commands of ``tq-console``: inspect, control, status, purge, result, call,
queues, dead and beat. They follow Celery's habits (``-A``, ``--broker``, ``--json``) and the
exit codes documented in ``cli.py``. Added to the ``cli`` group there.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

HELP_JSON = "Print machine-readable JSON."
HELP_TIMEOUT = "Seconds to wait for replies."
HELP_DEST = "Comma-separated node names (default: every worker)."
INSPECT_COMMANDS = (
    "ping",
    "active",
    "reserved",
    "scheduled",
    "revoked",
    "registered",
    "stats",
    "active_queues",
    "query_task",
    "conf",
    "report",
    "clock",
)
EXIT_FAILED = 1
EXIT_BROKER = 3


def _app(ctx: click.Context) -> Any:
    from tq_console.cli import check_broker, load_app, use_urls

    root = ctx.find_root().obj or {}
    app = load_app(root.get("app_spec"))
    use_urls(app, root.get("broker"), root.get("backend"))
    check_broker(app)
    return app


def _dest(destination: str | None) -> list[str] | None:
    return [d.strip() for d in destination.split(",") if d.strip()] if destination else None


def _emit(data: Any, as_json: bool, human: Any = None) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=repr))
    elif human is not None:
        click.echo(human)
    else:
        click.echo(json.dumps(data, indent=2, default=repr))


def _nodes_reply(replies: dict[str, Any] | None, as_json: bool) -> None:
    if not replies:
        click.echo("Error: No nodes replied within time constraint.", err=True)
        sys.exit(EXIT_FAILED)
    if as_json:
        _emit(replies, True)
        return
    for node, value in sorted(replies.items()):
        click.echo(f"->  {node}: OK")
        text = json.dumps(value, indent=4, default=repr)
        click.echo("\n".join("    " + line for line in text.splitlines()))
    click.echo(f"\n{len(replies)} node{'s' if len(replies) != 1 else ''} online.")


@click.command()
@click.argument("command", type=click.Choice(INSPECT_COMMANDS))
@click.argument("args", nargs=-1)
@click.option("-t", "--timeout", default=1.0, show_default=True, help=HELP_TIMEOUT)
@click.option("-d", "--destination", help=HELP_DEST)
@click.option("-j", "--json", "as_json", is_flag=True, help=HELP_JSON)
@click.pass_context
def inspect(
    ctx: click.Context,
    command: str,
    args: tuple[str, ...],
    timeout: float,
    destination: str | None,
    as_json: bool,
) -> None:
    """Ask workers (tq's or Celery's) about their state."""
    app = _app(ctx)
    insp = app.control.inspect(destination=_dest(destination), timeout=timeout)
    if command == "query_task":
        replies = insp.query_task(*args)
    elif command == "registered":
        replies = insp.registered(*args)
    elif command in ("active", "reserved", "scheduled"):
        # argsrepr / kwargsrepr, never the arguments themselves (S6); a Celery worker honours
        # this for ``active`` only
        replies = getattr(insp, command)(safe=True)
    else:
        replies = getattr(insp, command)()
    _nodes_reply(replies, as_json)


CONTROL_ARGS: dict[str, tuple[str, ...]] = {
    "revoke": ("task_id",),
    "terminate": ("task_id",),
    "rate_limit": ("task_name", "rate_limit"),
    "time_limit": ("task_name", "soft", "hard"),
    "pool_grow": ("n",),
    "pool_shrink": ("n",),
    "autoscale": ("max", "min"),
    "add_consumer": ("queue",),
    "cancel_consumer": ("queue",),
    "enable_events": (),
    "disable_events": (),
    "heartbeat": (),
    "shutdown": (),
}
NUMERIC = {"n", "max", "min", "soft", "hard"}
#: Workers (Celery's and tq's) never answer these: sent without waiting for a reply.
NO_REPLY = {"heartbeat", "shutdown"}


@click.command()
@click.argument("command", type=click.Choice(sorted(CONTROL_ARGS)))
@click.argument("args", nargs=-1)
@click.option("-t", "--timeout", default=1.0, show_default=True, help=HELP_TIMEOUT)
@click.option("-d", "--destination", help=HELP_DEST)
@click.option("--terminate", is_flag=True, help="revoke: also stop the task if it runs.")
@click.option("--signal", "signame", default="SIGTERM", show_default=True)
@click.option("-j", "--json", "as_json", is_flag=True, help=HELP_JSON)
@click.pass_context
def control(
    ctx: click.Context,
    command: str,
    args: tuple[str, ...],
    timeout: float,
    destination: str | None,
    terminate: bool,
    signame: str,
    as_json: bool,
) -> None:
    """Change workers at runtime: revoke, rate limits, pool size, consumers, events."""
    names = CONTROL_ARGS[command]
    if command in ("pool_grow", "pool_shrink") and not args:
        args = ("1",)
    if len(args) < len(names) or (len(args) > len(names) and command not in ("revoke",)):
        raise click.UsageError(f"{command} takes: {' '.join(names) or 'no arguments'}")
    arguments: dict[str, Any] = {}
    for name, value in zip(names, args, strict=False):
        if name in NUMERIC:
            try:
                arguments[name] = float(value) if name in ("soft", "hard") else int(value)
            except ValueError:
                raise click.BadParameter(f"{name} must be a number, got {value!r}") from None
        else:
            arguments[name] = value
    if command in ("revoke", "terminate"):
        arguments["task_id"] = list(args)
        arguments["terminate"] = terminate or command == "terminate"
        arguments["signal"] = signame
        command = "revoke"
    app = _app(ctx)
    if command == "revoke":
        app.control.store_revoked(arguments["task_id"])
    if command in NO_REPLY:
        app.control.broadcast(command, arguments, destination=_dest(destination))
        click.echo(f"Sent {command} to {destination or 'every worker'} (no reply is expected).")
        return
    replies = app.control.broadcast(
        command, arguments, destination=_dest(destination), reply=True, timeout=timeout
    )
    merged: dict[str, Any] = {}
    for reply in replies:
        merged.update(reply)
    _nodes_reply(merged, as_json)


@click.command()
@click.option("-t", "--timeout", default=1.0, show_default=True, help=HELP_TIMEOUT)
@click.option("-j", "--json", "as_json", is_flag=True, help=HELP_JSON)
@click.pass_context
def status(ctx: click.Context, timeout: float, as_json: bool) -> None:
    """List the nodes that answer a ping."""
    app = _app(ctx)
    replies = app.control.inspect(timeout=timeout).ping() or {}
    if as_json:
        _emit(sorted(replies), True)
    else:
        for node in sorted(replies):
            click.echo(f"->  {node}: OK")
        click.echo(f"\n{len(replies)} node{'s' if len(replies) != 1 else ''} online.")
    if not replies:
        sys.exit(EXIT_FAILED)


@click.command()
@click.option("-Q", "--queues", help="Comma-separated queues (default: the app's default queue).")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def purge(ctx: click.Context, queues: str | None, force: bool) -> None:
    """Delete every waiting message from the queues (held messages are kept)."""
    app = _app(ctx)
    names = [q.strip() for q in (queues or app.conf.task_default_queue).split(",") if q.strip()]
    transport = app.transport
    counts = {q: transport.queue_length(q) for q in names}
    total = sum(counts.values())
    if not force:
        listed = ", ".join(f"{q} ({n})" for q, n in counts.items())
        click.confirm(f"{total} message(s) will be deleted from: {listed}. Continue?", abort=True)
    removed = sum(transport.purge(q) for q in names)
    click.echo(
        f"Purged {removed} message{'s' if removed != 1 else ''} from "
        f"{len(names)} known task queue{'s' if len(names) != 1 else ''}."
    )


@click.command()
@click.argument("task_id")
@click.option("--traceback", "show_tb", is_flag=True, help="Print the traceback of a failure.")
@click.option("-j", "--json", "as_json", is_flag=True, help=HELP_JSON)
@click.pass_context
def result(ctx: click.Context, task_id: str, show_tb: bool, as_json: bool) -> None:
    """Show a task's state and result."""
    app = _app(ctx)
    if app.backend is None:
        raise click.ClickException("no result backend is configured (--result-backend)")
    meta = app.backend.get_meta(task_id)
    if as_json:
        _emit(meta, True)
    elif show_tb:
        click.echo(meta.get("traceback") or f"(no traceback: state {meta.get('status')})")
    else:
        click.echo(f"{meta.get('status')}: {json.dumps(meta.get('result'), default=repr)}")
    if meta.get("status") in ("FAILURE", "REVOKED"):
        sys.exit(EXIT_FAILED)


def _json_arg(value: str | None, kind: type, name: str) -> Any:
    if value is None:
        return kind()
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(parsed, kind):
        raise click.BadParameter(f"{name} must be a JSON {kind.__name__}")
    return parsed


@click.command()
@click.argument("name")
@click.option("-a", "--args", "args_json", help="Positional arguments as a JSON list: '[2, 2]'.")
@click.option("-k", "--kwargs", "kwargs_json", help="Keyword arguments as a JSON object.")
@click.option("--countdown", type=click.FloatRange(min=0), help="Seconds to wait before running.")
@click.option("--eta", help="ISO-8601 time to run at.")
@click.option("--expires", type=click.FloatRange(min=0), help="Seconds after which it expires.")
@click.option("-Q", "--queue", help="Queue to send it to.")
@click.option("--priority", type=click.IntRange(0, 9))
@click.option(
    "--wait", "wait_s", type=click.FloatRange(min=0), help="Wait this long for the result."
)
@click.pass_context
def call(
    ctx: click.Context,
    name: str,
    args_json: str | None,
    kwargs_json: str | None,
    countdown: float | None,
    eta: str | None,
    expires: float | None,
    queue: str | None,
    priority: int | None,
    wait_s: float | None,
) -> None:
    """Send a task by name and print its id."""
    import datetime as dt

    args = _json_arg(args_json, list, "--args")
    kwargs = _json_arg(kwargs_json, dict, "--kwargs")
    eta_dt = None
    if eta:
        try:
            eta_dt = dt.datetime.fromisoformat(eta)
        except ValueError as exc:
            raise click.BadParameter(f"--eta: {exc}") from None
    app = _app(ctx)
    res = app.send_task(
        name,
        args,
        kwargs,
        countdown=countdown,
        eta=eta_dt,
        expires=expires,
        queue=queue,
        priority=priority,
    )
    click.echo(res.id)
    if wait_s is not None:
        try:
            click.echo(json.dumps(res.get(timeout=wait_s), default=repr))
        except Exception as exc:
            click.echo(f"Error: {type(exc).__name__}: {exc}", err=True)
            sys.exit(EXIT_FAILED)


@click.command()
@click.option("-Q", "--queues", help="Comma-separated queues (default: the app's default queue).")
@click.option("-j", "--json", "as_json", is_flag=True, help=HELP_JSON)
@click.pass_context
def queues(ctx: click.Context, queues: str | None, as_json: bool) -> None:
    """Queue lengths per priority, the unacked count and the oldest unacked age."""
    app = _app(ctx)
    transport = app.transport
    names = [q.strip() for q in (queues or app.conf.task_default_queue).split(",") if q.strip()]
    data: dict[str, Any] = {"queues": {q: dict(transport.queue_lengths(q)) for q in names}}
    oldest = transport.unacked_oldest(1)
    data["unacked"] = transport.unacked_count()
    data["oldest_unacked_age"] = (transport.server_time() - oldest[0][1]) if oldest else None
    data["visibility_timeout"] = transport.visibility_timeout
    if as_json:
        _emit(data, True)
        return
    for q, lengths in data["queues"].items():
        per = "  ".join(f"p{step}:{n}" for step, n in lengths.items())
        click.echo(f"{q:<24} {sum(lengths.values()):>8}   ({per})")
    age = data["oldest_unacked_age"]
    age_text = f"{age:.1f}s" if age is not None else "-"
    click.echo(
        f"\nunacked: {data['unacked']}  oldest: {age_text}  "
        f"(visibility timeout {transport.visibility_timeout:.0f}s)"
    )


@click.group()
def dead() -> None:
    """The dead-letter list (tq.dead): messages that could not run."""


@dead.command("list")
@click.option("-n", "--limit", default=50, show_default=True)
@click.option("-j", "--json", "as_json", is_flag=True, help=HELP_JSON)
@click.pass_context
def dead_list(ctx: click.Context, limit: int, as_json: bool) -> None:
    from tq.worker import deadletter

    app = _app(ctx)
    rows = deadletter.listing(app.transport, limit)
    if as_json:
        _emit(
            [r.__class__.__name__ and {f: getattr(r, f) for f in r.__slots__} for r in rows], True
        )
        return
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.time))
        click.echo(f"{r.id:<8} {when}  {r.queue:<12} {r.task_name or '?':<28} {r.reason}")
    click.echo(f"\n{app.transport.dead_count()} dead letter(s).")


@dead.command("requeue")
@click.argument("entry_ids", nargs=-1, required=True)
@click.pass_context
def dead_requeue(ctx: click.Context, entry_ids: tuple[str, ...]) -> None:
    from tq.worker import deadletter

    app = _app(ctx)
    failed = 0
    for entry_id in entry_ids:
        res = deadletter.requeue(app.transport, entry_id, app.conf.task_default_queue)
        click.echo(res.message, err=not res.ok)
        failed += not res.ok
    if failed:
        sys.exit(EXIT_FAILED)


@dead.command("purge")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def dead_purge(ctx: click.Context, force: bool) -> None:
    app = _app(ctx)
    if not force:
        n = app.transport.dead_count()
        click.confirm(f"{n} dead letter(s) will be deleted. Continue?", abort=True)
    click.echo(f"Deleted {app.transport.dead_purge()} dead letter(s).")


@click.command()
@click.pass_context
def beat(ctx: click.Context) -> None:
    """Run the beat scheduler standalone (any number may run; one leads)."""
    import signal
    import threading

    from tq.beat import Beat

    app = _app(ctx)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    scheduler = Beat(app)
    click.echo(f"beat: {len(scheduler.entries)} entries; Ctrl+C to stop")
    scheduler.run(stop)


COMMANDS = (inspect, control, status, purge, result, call, queues, dead, beat)
