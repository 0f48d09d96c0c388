"""The settings table: Celery's setting names, their defaults, and old-name aliases.

``Settings`` is a mapping with attribute access. It loads from objects or modules
(``config_from_object``), from mappings, and from ``TQ_*`` environment variables
(``TQ_BROKER_URL``, ``TQ_RESULT_BACKEND``), which win over everything else.
"""

from __future__ import annotations

import importlib
import os
import types
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from tq.exceptions import ConfigurationError

#: Every setting tq reads, with its default. Names are Celery's; tq-only settings say so.
DEFAULTS: dict[str, Any] = {
    "broker_url": "redis://localhost:6379/0",
    "broker_transport_options": {},
    "broker_use_ssl": None,
    "broker_connection_timeout": 4.0,
    "broker_max_message_size": 64 * 1024 * 1024,  # tq: refuse bigger messages (T21)
    "result_backend": None,
    "result_backend_transport_options": {},
    "result_expires": 86400,
    "result_extended": False,
    "result_serializer": "json",
    "result_accept_content": None,
    "result_chord_join_timeout": 3.0,
    "result_traceback_limit": None,  # tq: cap stored tracebacks (S7)
    "task_serializer": "json",
    "accept_content": ["json"],
    "task_compression": None,
    "task_default_queue": "celery",
    "task_default_exchange": "celery",
    "task_default_routing_key": "celery",
    "task_default_priority": None,
    "task_queues": None,
    "task_routes": None,
    "task_annotations": None,
    "task_acks_late": False,
    "task_acks_on_failure_or_timeout": True,
    "task_reject_on_worker_lost": False,
    "task_track_started": False,
    "task_ignore_result": False,
    "task_store_errors_even_if_ignored": False,
    "task_time_limit": None,
    "task_soft_time_limit": None,
    "task_default_rate_limit": None,
    "task_default_retry_delay": 180,
    "task_max_retries": 3,
    "task_always_eager": False,
    "task_eager_propagates": False,
    "task_send_sent_event": False,
    "task_store_eager_result": False,
    "worker_concurrency": None,
    "worker_prefetch_multiplier": 4,
    "worker_max_tasks_per_child": None,
    "worker_max_memory_per_child": None,  # KiB, as Celery
    # tq: finite by default (T18: ~5.7 KB of controller memory per held ETA task); Celery: None
    "worker_eta_task_limit": 10000,
    # Celery 5.5: on a cold shutdown, running tasks get this many seconds to finish first
    "worker_soft_shutdown_timeout": 0.0,
    "worker_send_task_events": False,
    "worker_enable_remote_control": True,
    "worker_control_allowlist": None,  # tq: command names a worker accepts (S8)
    "worker_control_key": None,  # tq: shared key that signs mutating control commands
    "worker_disable_rate_limits": False,
    "worker_delivery_limit": 5,  # tq: deliveries before a message that kills workers is dead
    "worker_revoked_max": 50000,
    "worker_revoked_expires": 10800,
    "worker_lost_wait": 10.0,
    "worker_heartbeat_interval": 2.0,
    "worker_hostname": None,
    "timezone": None,
    "enable_utc": True,
    "beat_schedule": {},
    "beat_max_loop_interval": 5.0,
    "beat_lock_timeout": 10.0,  # tq: seconds before a standby beat takes over
    "control_exchange": "celery",
    "event_exchange": "celeryev",
    "event_serializer": "json",
    # Celery's message signing (task_serializer='auth', app.setup_security(); S9)
    "security_key": None,
    "security_key_password": None,
    "security_certificate": None,
    "security_cert_store": None,
    "security_digest": "sha256",
    "include": (),
    "imports": (),
}

#: Celery's pre-4.0 upper-case names → current names.
OLD_NAMES: dict[str, str] = {
    "BROKER_URL": "broker_url",
    "BROKER_TRANSPORT_OPTIONS": "broker_transport_options",
    "BROKER_USE_SSL": "broker_use_ssl",
    "CELERY_RESULT_BACKEND": "result_backend",
    "CELERY_RESULT_SERIALIZER": "result_serializer",
    "CELERY_TASK_SERIALIZER": "task_serializer",
    "CELERY_ACCEPT_CONTENT": "accept_content",
    "CELERY_TASK_RESULT_EXPIRES": "result_expires",
    "CELERY_DEFAULT_QUEUE": "task_default_queue",
    "CELERY_DEFAULT_EXCHANGE": "task_default_exchange",
    "CELERY_DEFAULT_ROUTING_KEY": "task_default_routing_key",
    "CELERY_ROUTES": "task_routes",
    "CELERY_QUEUES": "task_queues",
    "CELERY_ANNOTATIONS": "task_annotations",
    "CELERY_ACKS_LATE": "task_acks_late",
    "CELERY_TRACK_STARTED": "task_track_started",
    "CELERY_IGNORE_RESULT": "task_ignore_result",
    "CELERY_ALWAYS_EAGER": "task_always_eager",
    "CELERYD_TASK_TIME_LIMIT": "task_time_limit",
    "CELERYD_TASK_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "CELERY_DEFAULT_RATE_LIMIT": "task_default_rate_limit",
    "CELERYD_CONCURRENCY": "worker_concurrency",
    "CELERYD_PREFETCH_MULTIPLIER": "worker_prefetch_multiplier",
    "CELERYD_MAX_TASKS_PER_CHILD": "worker_max_tasks_per_child",
    "CELERYBEAT_SCHEDULE": "beat_schedule",
    "CELERY_TIMEZONE": "timezone",
    "CELERY_ENABLE_UTC": "enable_utc",
    "CELERY_SEND_EVENTS": "worker_send_task_events",
    "CELERY_IMPORTS": "imports",
    "CELERY_INCLUDE": "include",
    "CELERY_SECURITY_KEY": "security_key",
    "CELERY_SECURITY_CERTIFICATE": "security_certificate",
    "CELERY_SECURITY_CERT_STORE": "security_cert_store",
}

#: Environment variables that override settings.
ENV_OVERRIDES = {"TQ_BROKER_URL": "broker_url", "TQ_RESULT_BACKEND": "result_backend"}
#: The same, by setting name.
_ENV_FOR = {setting: env for env, setting in ENV_OVERRIDES.items()}

#: Setting names whose values are masked in ``inspect conf`` and banners (S5).
_SECRET_WORDS = ("API", "TOKEN", "KEY", "SECRET", "PASS", "SIGNATURE", "DATABASE")


def canonical(name: str) -> str:
    """The current name of a setting (old upper-case names are translated)."""
    return OLD_NAMES.get(name, name)


def is_secret(name: str) -> bool:
    upper = name.upper()
    return any(word in upper for word in _SECRET_WORDS)


class Settings(MutableMapping[str, Any]):
    """Celery-named settings with defaults, attribute access and environment overrides."""

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = {}
        #: Bumped on every change, so readers can cache what they derive from settings.
        self._version = 0
        if initial:
            self.update(initial)

    @property
    def version(self) -> int:
        return self._version

    def __getitem__(self, name: str) -> Any:
        name = OLD_NAMES.get(name, name)
        env = _ENV_FOR.get(name)
        if env is not None and os.environ.get(env):
            return os.environ[env]
        data = self._data
        return data[name] if name in data else DEFAULTS[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self._data[canonical(name)] = value
        self._version += 1

    def __delitem__(self, name: str) -> None:
        del self._data[canonical(name)]
        self._version += 1

    def __iter__(self) -> Iterator[str]:
        return iter({**DEFAULTS, **self._data})

    def __len__(self) -> int:
        return len({**DEFAULTS, **self._data})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no setting named {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    def changes(self) -> dict[str, Any]:
        """Settings set explicitly (not defaults)."""
        return dict(self._data)

    def from_object(self, obj: Any) -> None:
        """Load upper- or lower-case attributes of an object, or of a module given by path."""
        if isinstance(obj, str):
            try:
                module_name, _, attr = obj.partition(":")
                obj = importlib.import_module(module_name)
                if attr:
                    obj = getattr(obj, attr)
            except (ImportError, AttributeError) as exc:
                raise ConfigurationError(f"cannot load configuration {obj!r}: {exc}") from exc
        items = (
            obj.items()
            if isinstance(obj, Mapping)
            else ((k, getattr(obj, k)) for k in dir(obj) if not k.startswith("_"))
        )
        for key, value in items:
            name = canonical(key)
            plain = not callable(value) and not isinstance(value, types.ModuleType)
            if name in DEFAULTS or (key.islower() and plain):
                self[name] = value

    def masked(self) -> dict[str, Any]:
        """All settings with secrets and URL passwords masked (for ``inspect conf``)."""
        from tq.transport.connection import mask_url

        out: dict[str, Any] = {}
        for key in self:
            value = self[key]
            if key in ("broker_url", "result_backend") and isinstance(value, str):
                value = mask_url(value)
            elif is_secret(key) and value:
                value = "********"
            out[key] = value
        return out
