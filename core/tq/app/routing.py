"""``task_routes`` / ``task_queues`` → queue, exchange, routing key and priority.

A route is a dict (``{"queue": "q", "routing_key": ..., "exchange": ..., "priority": ...}``),
a queue name, or a function ``(name, args, kwargs, options, task=None, **kw) -> route``.
``task_routes`` may be a dict of name or glob → route, or a list of such dicts and functions,
as in Celery.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tq.exceptions import ConfigurationError


@dataclass(frozen=True, slots=True)
class Route:
    queue: str
    exchange: str = ""
    routing_key: str | None = None
    priority: int | None = None


def _as_dict(route: Any) -> dict[str, Any] | None:
    if route is None:
        return None
    if isinstance(route, str):
        return {"queue": route}
    if isinstance(route, Mapping):
        return dict(route)
    if hasattr(route, "name"):  # a Queue-like object
        return {"queue": route.name}
    raise ConfigurationError(f"a route must be a dict or a queue name, got {route!r}")


def _match_map(table: Mapping[Any, Any], name: str) -> dict[str, Any] | None:
    if name in table:
        return _as_dict(table[name])
    for pattern, route in table.items():
        if isinstance(pattern, re.Pattern):
            if pattern.match(name):
                return _as_dict(route)
        elif (
            isinstance(pattern, str)
            and any(c in pattern for c in "*?[")
            and fnmatch.fnmatchcase(name, pattern)
        ):
            return _as_dict(route)
    return None


class Router:
    """Decides where a task message goes."""

    def __init__(self, routes: Any, default_queue: str, queues: Any = None) -> None:
        if routes is None:
            routes = []
        elif isinstance(routes, Mapping) or callable(routes):
            routes = [routes]
        self.routes: list[Mapping[Any, Any] | Callable[..., Any]] = list(routes)
        self.default_queue = default_queue
        self.queue_exchanges: dict[str, tuple[str, str | None]] = {}
        for q in queues or ():
            if isinstance(q, Mapping):
                self.queue_exchanges[q["name"]] = (q.get("exchange", ""), q.get("routing_key"))
            elif hasattr(q, "name"):
                exchange = getattr(q, "exchange", None)
                ex_name = getattr(exchange, "name", exchange) or ""
                ex_type = getattr(exchange, "type", "direct")
                if ex_type == "direct":
                    ex_name = ""  # Celery rewrites direct publishes to the anonymous exchange
                self.queue_exchanges[q.name] = (ex_name, getattr(q, "routing_key", None))

    def route(
        self, name: str, args: Any, kwargs: Any, options: dict[str, Any], task: Any = None
    ) -> Route:
        found: dict[str, Any] = {}
        for entry in self.routes:
            if callable(entry) and not isinstance(entry, Mapping):
                got = _as_dict(entry(name, args, kwargs, options, task=task))
            else:
                got = _match_map(entry, name)
            if got:
                found = got
                break
        queue = options.get("queue") or found.get("queue") or self.default_queue
        if not isinstance(queue, str):
            queue = getattr(queue, "name", None) or str(queue)
        exchange, rk = self.queue_exchanges.get(queue, ("", None))
        exchange = options.get("exchange") or found.get("exchange") or exchange
        if hasattr(exchange, "name"):
            exchange = exchange.name if getattr(exchange, "type", "direct") != "direct" else ""
        routing_key = options.get("routing_key") or found.get("routing_key") or rk
        if exchange and exchange == queue and routing_key in (None, queue):
            exchange = ""  # same rewrite kombu does for a direct exchange named like its queue
        priority = options.get("priority")
        if priority is None:
            priority = found.get("priority")
        return Route(
            queue=queue, exchange=exchange or "", routing_key=routing_key, priority=priority
        )
