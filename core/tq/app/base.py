"""App: settings, the task registry, the task decorator, send_task, and the factories of the
transport, the result backend and the control client. No global app unless one is set as
default (for ``shared_task``).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import importlib
import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tq import signals
from tq.app import context
from tq.app.config import Settings
from tq.app.registry import PENDING_SHARED, TaskRegistry
from tq.app.result import AsyncResult
from tq.app.routing import Router
from tq.app.task import Task, make_task_class
from tq.exceptions import ConfigurationError
from tq.protocol import serializers
from tq.protocol.envelope import uuid4_str
from tq.protocol.message import TaskSpec, build_task, check_size
from tq.protocol.serializers import normalize_accept

if TYPE_CHECKING:
    import redis

    from tq.app.canvas import Signature
    from tq.app.control import Control
    from tq.backend.redis import RedisBackend
    from tq.transport.redis import RedisTransport

logger = logging.getLogger(__name__)


def _as_datetime_eta(countdown: float | None, eta: Any) -> dt.datetime | None:
    if eta is not None:
        if isinstance(eta, int | float):
            return dt.datetime.fromtimestamp(eta, dt.UTC)
        return eta  # type: ignore[no-any-return]
    if countdown is not None:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=float(countdown))
    return None


def _as_datetime_expires(expires: Any) -> dt.datetime | None:
    if expires is None:
        return None
    if isinstance(expires, dt.datetime):
        return expires if expires.tzinfo else expires.replace(tzinfo=dt.UTC)
    if isinstance(expires, dt.timedelta):
        return dt.datetime.now(dt.UTC) + expires
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=float(expires))


def _sig_list(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    items = value if isinstance(value, list | tuple) else [value]
    return [dict(s) for s in items] or None


@dataclass(frozen=True, slots=True)
class SendDefaults:
    """The settings a send reads, taken once per settings version."""

    version: int
    priority: int | None
    ignore_result: bool
    serializer: str
    compression: str | None
    max_size: int
    default_queue: str
    default_exchange: str


class App:
    """A tq application.

    Args:
        main: the name of the main module (used to name tasks defined in ``__main__``).
        broker: broker URL (``broker_url``).
        backend: result backend URL (``result_backend``).
        include: modules to import when a worker starts.
        config_source: an object, mapping or module path to load settings from.
        set_as_current: make this the current app in this context.
        **settings: any setting by its Celery name.
    """

    def __init__(
        self,
        main: str | None = None,
        broker: str | None = None,
        backend: str | None = None,
        include: Sequence[str] | None = None,
        config_source: Any = None,
        set_as_current: bool = True,
        **settings: Any,
    ) -> None:
        self.main = main
        self.conf = Settings()
        if config_source is not None:
            self.config_from_object(config_source)
        if broker:
            self.conf.broker_url = broker
        if backend:
            self.conf.result_backend = backend
        if include:
            self.conf.include = tuple(include)
        self.conf.update(settings)
        self.tasks = TaskRegistry()
        self._transport: RedisTransport | None = None
        self._backend: RedisBackend | None = None
        self._control: Control | None = None
        self._router: Router | None = None
        self._router_version = -1
        self._send_defaults: SendDefaults | None = None
        self._lock = threading.Lock()
        self._pid: int | None = None
        #: ``module:attribute`` path a fresh process can import this app from, when known.
        self.import_path: str | None = None
        if set_as_current:
            context.set_current_app(self)
        self._register_pending()
        from tq.app.workflow import register_builtins

        register_builtins(self)

    def __repr__(self) -> str:
        return f"<tq.App {self.main or '__main__'}>"

    # -- configuration ------------------------------------------------------------------------
    def config_from_object(self, obj: Any, silent: bool = False, force: bool = True) -> None:
        """Load settings from an object, a mapping, or a module path (``"proj.celeryconfig"``)."""
        try:
            self.conf.from_object(obj)
        except ConfigurationError:
            if not silent:
                raise
        self._router = None

    def config_from_envvar(self, name: str, silent: bool = False) -> None:
        import os

        value = os.environ.get(name)
        if value:
            self.config_from_object(value, silent=silent)
        elif not silent:
            raise ConfigurationError(f"environment variable {name} is not set")

    def set_default(self) -> None:
        """Make this the app ``shared_task`` and ``AsyncResult(id)`` use in this context."""
        context.set_current_app(self)

    def annotations_for(self, name: str) -> dict[str, Any]:
        """Options ``task_annotations`` gives the task ``name`` (exact names win over ``*``)."""
        raw = self.conf.task_annotations
        if not raw:
            return {}
        tables = raw if isinstance(raw, list | tuple) else [raw]
        out: dict[str, Any] = {}
        for table in tables:
            if callable(table) and not isinstance(table, Mapping):
                got = table(name)
                if got:
                    out.update(got)
                continue
            for pattern, opts in table.items():
                if pattern == name or (pattern != name and fnmatch.fnmatchcase(name, pattern)):
                    out.update(opts)
        return out

    @property
    def router(self) -> Router:
        version = self.conf.version
        if self._router is None or self._router_version != version:
            self._router = Router(
                self.conf.task_routes, self.conf.task_default_queue, self.conf.task_queues
            )
            self._router_version = version
        return self._router

    def send_defaults(self) -> SendDefaults:
        """Settings every send reads, cached until the settings change."""
        version = self.conf.version
        cached = self._send_defaults
        if cached is None or cached.version != version:
            c = self.conf
            if serializers.ALIASES.get(c.task_serializer) == serializers.AUTH:
                self._ensure_auth()
            cached = self._send_defaults = SendDefaults(
                version=version,
                priority=c.task_default_priority,
                ignore_result=bool(c.task_ignore_result),
                serializer=c.task_serializer,
                compression=c.task_compression,
                max_size=int(c.broker_max_message_size),
                default_queue=c.task_default_queue,
                default_exchange=c.task_default_exchange,
            )
        return cached

    # -- tasks --------------------------------------------------------------------------------
    def task(self, *args: Any, **options: Any) -> Any:
        """Decorator making a task from a function (``@app.task`` or ``@app.task(**opts)``)."""

        def create(fun: Callable[..., Any]) -> Task:
            return self._create_task(fun, **options)

        if len(args) == 1 and callable(args[0]) and not options:
            return create(args[0])
        if args:
            raise TypeError("@app.task takes keyword options only")
        return create

    def _create_task(self, fun: Callable[..., Any], **options: Any) -> Task:
        base: type[Task] = options.pop("base", None) or Task
        bind = bool(options.pop("bind", False))
        name = options.pop("name", None) or self.gen_task_name(fun.__name__, fun.__module__)
        if name in self.tasks and getattr(self.tasks[name], "__wrapped__", None) is fun:
            return self.tasks[name]
        cls = make_task_class(fun, base, name, bind, options)
        cls.app = self
        task = cls()
        self.tasks.register(task)
        return task

    def gen_task_name(self, name: str, module: str) -> str:
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{name}"

    def register_task(self, task: Task | type[Task]) -> Task:
        instance = task() if isinstance(task, type) else task
        instance.app = self
        if not instance.name:
            instance.name = self.gen_task_name(type(instance).__name__, type(instance).__module__)
        return self.tasks.register(instance)

    def _register_pending(self) -> None:
        for fun, options in PENDING_SHARED:
            self._create_task(fun, **dict(options))

    def autodiscover_tasks(self, packages: Sequence[str], related_name: str = "tasks") -> None:
        """Import ``<package>.<related_name>`` for each package (missing modules are skipped)."""
        for pkg in packages:
            try:
                importlib.import_module(f"{pkg}.{related_name}")
            except ModuleNotFoundError as exc:
                if exc.name not in (f"{pkg}.{related_name}", pkg):
                    raise
        self._register_pending()

    def import_modules(self) -> None:
        """Import ``include`` and ``imports`` (a worker does this at start)."""
        for name in (*self.conf.include, *self.conf.imports):
            importlib.import_module(name)
        self._register_pending()

    def signature(self, *args: Any, **kwargs: Any) -> Signature:
        from tq.app.canvas import signature

        return signature(*args, app=self, **kwargs)

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult:
        return AsyncResult(task_id, app=self, **kwargs)

    def GroupResult(self, *args: Any, **kwargs: Any) -> Any:
        from tq.app.result import GroupResult

        return GroupResult(*args, app=self, **kwargs)

    # -- connections --------------------------------------------------------------------------
    def _check_fork(self) -> None:
        import os

        pid = os.getpid()
        if self._pid != pid:
            # A forked child must not share sockets with its parent.
            self._transport = None
            self._backend = None
            self._control = None
            self._pid = pid

    @property
    def transport(self) -> RedisTransport:
        self._check_fork()
        if self._transport is None:
            from tq.transport.redis import RedisTransport

            with self._lock:
                if self._transport is None:
                    self._transport = RedisTransport(
                        self.conf.broker_url, self._transport_options()
                    )
        return self._transport

    def _transport_options(self) -> dict[str, Any]:
        opts = dict(self.conf.broker_transport_options or {})
        ssl_opts = self.conf.broker_use_ssl
        if isinstance(ssl_opts, Mapping):
            opts.update(ssl_opts)
        return opts

    def broker_client(self) -> redis.Redis:
        """The broker's redis-py client (for beat and tools)."""
        return self.transport.client

    @property
    def backend(self) -> RedisBackend | None:
        """The result backend, or None when ``result_backend`` is not set."""
        self._check_fork()
        url = self.conf.result_backend
        if not url:
            return None
        if self._backend is None:
            from tq.backend.redis import RedisBackend

            if not str(url).startswith(("redis", "rediss", "unix", "sentinel", "valkey")):
                raise ConfigurationError(
                    f"result_backend {url!r} is not supported: tq stores results in Redis"
                )
            with self._lock:
                if self._backend is None:
                    self._backend = RedisBackend(
                        str(url),
                        self.conf.result_backend_transport_options,
                        expires=self.conf.result_expires,
                    )
        return self._backend

    @property
    def control(self) -> Control:
        """The remote-control client (inspect, revoke, pool grow/shrink …)."""
        self._check_fork()
        if self._control is None:
            from tq.app.control import Control

            self._control = Control(self)
        return self._control

    @property
    def accept_content(self) -> frozenset[str]:
        accept = normalize_accept(self.conf.accept_content)
        if serializers.AUTH in accept:
            self._ensure_auth()
        return accept

    # -- message signing (RELIABILITY.md S9) --------------------------------------------------
    def setup_security(
        self,
        allowed_serializers: Sequence[str] | None = None,
        key: str | None = None,
        key_password: str | bytes | None = None,
        cert: str | None = None,
        store: str | None = None,
        digest: str | None = None,
        serializer: str = "json",
    ) -> None:
        """Sign every task message with ``security_key`` and verify received ones against
        ``security_cert_store``: Celery's ``auth`` serializer, same wire format.

        Sets ``task_serializer='auth'`` and ``accept_content=['auth']``, so unsigned,
        tampered, or unknown-signer messages are refused and dead-lettered. As in Celery the
        serializer is registered for the whole process. ``allowed_serializers`` is accepted
        for Celery's signature; it never widens ``accept_content``.

        Arguments default to the ``security_*`` settings; ``serializer`` is the inner format
        that is signed (json or msgpack).

        Raises:
            ConfigurationError: cryptography is not installed, a setting is missing, or the
                key, certificate or store cannot be loaded.
        """
        c = self.conf
        for name, value in (
            ("security_key", key),
            ("security_key_password", key_password),
            ("security_certificate", cert),
            ("security_cert_store", store),
            ("security_digest", digest),
        ):
            if value is not None:
                c[name] = value
        self._setup_auth(serializer)
        c.task_serializer = "auth"
        c.accept_content = ["auth"]

    def _ensure_auth(self) -> None:
        if serializers.AUTH not in serializers.SERIALIZERS:
            self._setup_auth("json")

    def _setup_auth(self, serializer: str) -> None:
        from tq.protocol import signing

        c = self.conf
        missing = [
            n for n in ("security_key", "security_certificate", "security_cert_store") if not c[n]
        ]
        if missing:
            raise ConfigurationError(
                "the auth serializer (message signing) needs security_key, "
                f"security_certificate and security_cert_store; missing: {', '.join(missing)}"
            )
        signer = signing.Signer(
            c.security_key,
            c.security_certificate,
            c.security_cert_store,
            digest=c.security_digest or "sha256",
            key_password=c.security_key_password,
            serializer=serializer,
        )
        signing.register(signer)

    def close(self) -> None:
        for part in (self._transport, self._backend):
            if part is not None:
                part.close()
        self._transport = None
        self._backend = None

    # -- sending ------------------------------------------------------------------------------
    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        countdown: float | None = None,
        eta: Any = None,
        task_id: str | None = None,
        expires: Any = None,
        **options: Any,
    ) -> AsyncResult:
        """Send a task by name (it need not be registered here).

        Returns:
            The ``AsyncResult`` of the new task.
        """
        task = options.pop("task", None)
        args = tuple(args or ())
        kwargs = dict(kwargs or {})
        task_id = task_id or uuid4_str()
        defaults = self.send_defaults()
        route = self.router.route(name, args, kwargs, options, task)
        priority = route.priority
        if priority is None:
            priority = defaults.priority
        parent = context.current_request()
        parent_id = options.get("parent_id")
        root_id = options.get("root_id")
        if parent is not None and not parent.called_directly and parent.id:
            parent_id = parent_id or parent.id
            root_id = root_id or parent.root_id or parent.id
        spec = TaskSpec(
            name=name,
            id=task_id,
            args=args,
            kwargs=kwargs,
            queue=route.queue,
            exchange=route.exchange,
            routing_key=route.routing_key,
            priority=priority,
            eta=_as_datetime_eta(countdown, eta),
            expires=_as_datetime_expires(expires),
            retries=int(options.get("retries") or 0),
            time_limit=options.get("time_limit"),
            soft_time_limit=options.get("soft_time_limit"),
            root_id=root_id,
            parent_id=parent_id,
            group_id=options.get("group_id"),
            group_index=options.get("group_index"),
            shadow=options.get("shadow"),
            ignore_result=bool(options.get("ignore_result", defaults.ignore_result)),
            argsrepr=options.get("argsrepr"),
            kwargsrepr=options.get("kwargsrepr"),
            origin=options.get("origin"),
            reply_to=options.get("reply_to"),
            callbacks=_sig_list(options.get("link")),
            errbacks=_sig_list(options.get("link_error")),
            chain=_sig_list(options.get("chain")),
            chord=dict(options["chord"]) if options.get("chord") else None,
            headers=dict(options.get("headers") or {}),
            serializer=options.get("serializer") or defaults.serializer,
            compression=options.get("compression") or defaults.compression,
            stamps=dict(options.get("stamps") or {}),
        )
        self.publish_spec(spec)
        result = AsyncResult(task_id, app=self, task_name=name)
        if parent is not None and not parent.called_directly and options.get("add_to_parent", True):
            parent.children.append(result)
        return result

    def publish_spec(self, spec: TaskSpec) -> str:
        """Build and publish one task message; returns its delivery tag."""
        defaults = self.send_defaults()
        tag, envelope = build_task(spec)
        check_size(envelope, defaults.max_size)
        transport = self.transport
        routing_key = spec.routing_key if spec.routing_key is not None else spec.queue
        if signals.before_task_publish.receivers:
            signals.before_task_publish.send(
                sender=spec.name,
                body=None,
                exchange=spec.exchange,
                routing_key=routing_key,
                headers={"task": spec.name, "id": spec.id},
                properties={},
                declare=[],
                retry_policy=None,
            )
        if not spec.exchange:
            transport.declare_queue(
                spec.queue,
                defaults.default_exchange if spec.queue == defaults.default_queue else spec.queue,
            )
        delivered = transport.publish(
            envelope, spec.queue, spec.priority or 0, spec.exchange, routing_key
        )
        if delivered == 0:
            logger.warning(
                "Task %s[%s] matched no queue bound to exchange %r with routing key %r; "
                "the message was dropped",
                spec.name,
                spec.id,
                spec.exchange,
                routing_key,
            )
        if signals.after_task_publish.receivers:
            signals.after_task_publish.send(
                sender=spec.name,
                body=None,
                exchange=spec.exchange,
                routing_key=routing_key,
                headers={"task": spec.name, "id": spec.id},
            )
        return tag

    def send_retry(
        self,
        task: Task,
        request: context.Request,
        args: Sequence[Any] | None,
        kwargs: dict[str, Any] | None,
        eta: dt.datetime | None,
        options: dict[str, Any],
    ) -> None:
        """Send ``request`` again as Celery's retry does: same id, ``retries + 1``, the ETA,
        ``parent_id`` = its own id, same root, origin, embed, headers, limits and queue."""
        delivery = request.delivery_info or {}
        queue = options.get("queue") or delivery.get("routing_key") or self.conf.task_default_queue
        hard, soft = request.timelimit
        custom = {k: v for k, v in (request.headers or {}).items() if k not in _PROTOCOL_HEADERS}
        spec = TaskSpec(
            name=request.task or task.name,
            id=request.id or str(uuid.uuid4()),
            args=tuple(request.args if args is None else args),
            kwargs=dict(request.kwargs if kwargs is None else kwargs),
            queue=queue,
            exchange=delivery.get("exchange") or "",
            routing_key=options.get("routing_key"),
            priority=options.get("priority", request.priority),
            eta=eta,
            expires=_as_datetime_expires(request.expires)
            if isinstance(request.expires, int | float)
            else (None if request.expires is None else _parse_iso(request.expires)),
            retries=request.retries + 1,
            time_limit=options.get("time_limit", hard),
            soft_time_limit=options.get("soft_time_limit", soft),
            root_id=request.root_id,
            parent_id=request.id,
            group_id=request.group,
            group_index=request.group_index,
            shadow=request.shadow,
            ignore_result=request.ignore_result,
            argsrepr=request.argsrepr if args is None else None,
            kwargsrepr=request.kwargsrepr if kwargs is None else None,
            origin=request.origin,
            reply_to=request.reply_to,
            callbacks=request.callbacks,
            errbacks=request.errbacks,
            chain=request.chain,
            chord=request.chord,
            headers=custom,
            serializer=options.get("serializer") or self.conf.task_serializer,
        )
        self.publish_spec(spec)


def _parse_iso(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    try:
        return dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None


#: Header names the protocol writes itself; anything else on a request is a custom header.
_PROTOCOL_HEADERS = frozenset(
    {
        "lang",
        "task",
        "id",
        "shadow",
        "eta",
        "expires",
        "group",
        "group_index",
        "retries",
        "timelimit",
        "root_id",
        "parent_id",
        "argsrepr",
        "kwargsrepr",
        "origin",
        "ignore_result",
        "replaced_task_nesting",
        "stamped_headers",
        "stamps",
        "redelivered",
    }
)


def shared_task(*args: Any, **options: Any) -> Any:
    """A task defined without an app: every App registers it (explicitly, at creation)."""

    def create(fun: Callable[..., Any]) -> Any:
        PENDING_SHARED.append((fun, options))
        app = context.current_app()
        if app is not None:
            return app._create_task(fun, **dict(options))
        return fun

    if len(args) == 1 and callable(args[0]) and not options:
        return create(args[0])
    return create
