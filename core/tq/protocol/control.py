"""Remote-control ("pidbox") messages: the request and reply envelopes and node matching.

Owns the wire shape of wire spec 5.2. A request is published on the ``celery.pidbox`` fanout:
body ``{"method", "arguments", "destination", "pattern", "matcher"}`` plus ``ticket`` and
``reply_to {"exchange", "routing_key"}`` only when a reply is wanted; headers ``{"clock",
"expires"}``; ``delivery_mode`` 2. A reply is pushed to the client's reply queue: body
``{"<nodename>": <value>}``, headers ``{"ticket", "clock"}``, ``delivery_mode`` 1. A node runs
a request when its name is in ``destination``, or (no destination) it matches ``pattern`` with
``matcher`` (``glob`` = fnmatch, ``pcre`` = ``re.match``), or neither is given. With
``worker_control_key`` set, requests carry ``headers["x-tq-signature"]``, the hex HMAC-SHA256 of
the body bytes (tq only; Celery ignores the header). The signature does not cover the headers,
so a captured signed request can be replayed.

Pure: imports only the standard library, tq.exceptions and sibling protocol modules; it never
touches Redis (``tq.app.control`` is the client, ``tq.worker.control`` the handlers).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tq.exceptions import DecodeError, ProtocolError
from tq.protocol.envelope import build_envelope, parse_envelope
from tq.protocol.serializers import JSON, dumps, loads

logger = logging.getLogger(__name__)

#: Default ``control_exchange``; the fanout is ``<ns>.pidbox``, replies go to ``reply.<ns>.pidbox``.
CONTROL_NAMESPACE = "celery"
#: Node-name matchers a request may name (kombu's built-in registry).
MATCHERS = ("glob", "pcre")


def pidbox_exchange(namespace: str = CONTROL_NAMESPACE) -> str:
    """The broadcast exchange: ``celery.pidbox``."""
    return f"{namespace}.pidbox"


def reply_exchange(namespace: str = CONTROL_NAMESPACE) -> str:
    """The direct exchange replies are routed through: ``reply.celery.pidbox``."""
    return f"reply.{namespace}.pidbox"


@dataclass(frozen=True, slots=True)
class ReplyTo:
    """Where a worker sends its reply: the reply exchange and the client's oid."""

    exchange: str
    routing_key: str


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """One remote-control command.

    Attributes:
        method: command name (``ping``, ``stats``, ``revoke`` …).
        arguments: the command's keyword arguments.
        destination: node names that should run it, or None for all.
        pattern: node-name pattern used when ``destination`` is None.
        matcher: ``glob`` or ``pcre``.
        ticket: reply correlation id; None when no reply is wanted.
        reply_to: where replies go; None when no reply is wanted.
        clock: the sender's Lamport clock (header).
        expires: Unix time after which the client stops listening, or 0 (header).
    """

    method: str
    arguments: dict[str, Any] = field(default_factory=dict)
    destination: tuple[str, ...] | None = None
    pattern: str | None = None
    matcher: str | None = None
    ticket: str | None = None
    reply_to: ReplyTo | None = None
    clock: int = 0
    expires: float = 0.0

    @property
    def wants_reply(self) -> bool:
        return bool(self.ticket) and self.reply_to is not None

    def body(self) -> dict[str, Any]:
        """The request body in kombu's key order."""
        out: dict[str, Any] = {
            "method": self.method,
            "arguments": dict(self.arguments),
            "destination": list(self.destination) if self.destination is not None else None,
            "pattern": self.pattern,
            "matcher": self.matcher,
        }
        if self.ticket and self.reply_to is not None:
            out["ticket"] = self.ticket
            out["reply_to"] = {
                "exchange": self.reply_to.exchange,
                "routing_key": self.reply_to.routing_key,
            }
        return out

    def is_for(self, nodename: str) -> bool:
        """Whether the node ``nodename`` should run this request."""
        return is_addressed_to(nodename, self.destination, self.pattern, self.matcher)


@dataclass(frozen=True, slots=True)
class ControlReply:
    """One reply message: ``{nodename: value}`` (normally a single node) and its headers."""

    replies: dict[str, Any]
    ticket: str | None
    clock: int | None = None
    expires: float | None = None


def match_node(nodename: str, pattern: str, matcher: str | None = "glob") -> bool:
    """kombu's matchers: ``glob`` is ``fnmatch(node, pattern)``, ``pcre`` is
    ``re.match(pattern, node)``. An unknown matcher or a bad regex matches nothing."""
    name = matcher or "glob"
    if name == "glob":
        return fnmatch.fnmatch(nodename, pattern)
    if name == "pcre":
        try:
            return re.match(pattern, nodename) is not None
        except re.error as exc:
            logger.warning("Bad pcre node pattern %r: %s", pattern, exc)
            return False
    logger.warning("Unknown node matcher %r (known: %s)", name, ", ".join(MATCHERS))
    return False


def is_addressed_to(
    nodename: str,
    destination: Iterable[str] | None,
    pattern: str | None = None,
    matcher: str | None = None,
) -> bool:
    """kombu's ``Node.handle_message`` rule: a non-empty destination must list the node;
    otherwise a pattern *with* a matcher must match; otherwise everyone runs it."""
    if destination:
        return nodename in tuple(destination)
    if pattern and matcher:
        return match_node(nodename, pattern, matcher)
    return True


def build_request(
    request: ControlRequest,
    exchange: str | None = None,
    serializer: str = "json",
) -> str:
    """The envelope text of a request, as ``celery inspect`` publishes it."""
    content_type, encoding, data = dumps(request.body(), serializer)
    return build_envelope(
        data,
        content_type,
        encoding,
        {"clock": request.clock, "expires": request.expires},
        {
            "delivery_mode": 2,
            "delivery_info": {"exchange": exchange or pidbox_exchange(), "routing_key": ""},
            "priority": 0,
        },
    )


def _optional_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise DecodeError(f"control request {key!r} must be a string or null, got {value!r}")


def _destination(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise DecodeError(f"control request destination must be a list of names, got {value!r}")


def _reply_to(value: Any) -> ReplyTo | None:
    if value is None:
        return None
    if (
        isinstance(value, dict)
        and isinstance(value.get("exchange"), str)
        and isinstance(value.get("routing_key"), str)
    ):
        return ReplyTo(value["exchange"], value["routing_key"])
    raise DecodeError(f"control request reply_to must be {{exchange, routing_key}}, got {value!r}")


def _number(value: Any, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return default


def parse_request(raw: str | bytes, accept: frozenset[str] = frozenset({JSON})) -> ControlRequest:
    """Decode a request envelope (what a worker's pidbox consumer receives).

    Raises:
        DecodeError: bad envelope, a body that is not a request, or wrong field types.
        ContentDisallowed: the content type is not in ``accept``.
    """
    env = parse_envelope(raw)
    body = loads(env.body, env.content_type, accept)
    if not isinstance(body, dict):
        raise DecodeError(f"control request body is a {type(body).__name__}, not an object")
    method = body.get("method")
    if not isinstance(method, str) or not method:
        raise DecodeError(f"control request has no method: {body!r:.200}")
    arguments = body.get("arguments")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise DecodeError(f"control request arguments must be an object, got {arguments!r:.200}")
    ticket = body.get("ticket")
    clock = env.headers.get("clock")
    return ControlRequest(
        method=method,
        arguments=arguments,
        destination=_destination(body.get("destination")),
        pattern=_optional_str(body, "pattern"),
        matcher=_optional_str(body, "matcher"),
        ticket=str(ticket) if ticket else None,
        reply_to=_reply_to(body.get("reply_to")),
        clock=int(clock) if isinstance(clock, int) and not isinstance(clock, bool) else 0,
        expires=_number(env.headers.get("expires"), 0.0),
    )


def build_reply(
    nodename: str,
    value: Any,
    ticket: str,
    reply_to: ReplyTo,
    clock: int,
    serializer: str = "json",
) -> str:
    """The envelope text of a worker's reply: body ``{nodename: value}``, headers
    ``{"ticket", "clock"}``, ``delivery_mode`` 1, delivery_info = the request's ``reply_to``."""
    content_type, encoding, data = dumps({nodename: value}, serializer)
    return build_envelope(
        data,
        content_type,
        encoding,
        {"ticket": ticket, "clock": clock},
        {
            "delivery_mode": 1,
            "delivery_info": {"exchange": reply_to.exchange, "routing_key": reply_to.routing_key},
            "priority": 0,
        },
    )


def parse_reply(raw: str | bytes, accept: frozenset[str] = frozenset({JSON})) -> ControlReply:
    """Decode a reply envelope (what a control client pops from its reply queue).

    Raises:
        DecodeError: bad envelope or a body that is not ``{nodename: value}``.
        ContentDisallowed: the content type is not in ``accept``.
    """
    env = parse_envelope(raw)
    body = loads(env.body, env.content_type, accept)
    if not isinstance(body, dict):
        raise DecodeError(f"control reply body is a {type(body).__name__}, not an object")
    ticket = env.headers.get("ticket")
    clock = env.headers.get("clock")
    expires = env.headers.get("expires")
    return ControlReply(
        replies=body,
        ticket=str(ticket) if ticket else None,
        clock=int(clock) if isinstance(clock, int) and not isinstance(clock, bool) else None,
        expires=_number(expires, 0.0) or None,
    )


def merge_replies(replies: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Celery's ``flatten_reply``: ``[{a: r1}, {b: r2}]`` → ``{a: r1, b: r2}``.

    A node name that answers twice (two workers with one name) keeps the last answer and is
    logged, as Celery warns.
    """
    nodes: dict[str, Any] = {}
    dupes: set[str] = set()
    for item in replies:
        for name, value in item.items():
            if name in nodes:
                dupes.add(name)
            nodes[name] = value
    if dupes:
        logger.warning(
            "Received multiple replies from node name(s) %s: give each worker a unique "
            "name with -n",
            ", ".join(sorted(dupes)),
        )
    return nodes


def ok(text: str) -> dict[str, str]:
    """A successful control reply value: ``{"ok": text}``."""
    return {"ok": text}


def error(text: str) -> dict[str, str]:
    """A failed control reply value: ``{"error": text}``."""
    return {"error": text}


def unknown_command(method: str) -> dict[str, str]:
    """A Celery worker's answer to an unknown command: ``{"error": "KeyError('x')"}``."""
    return {"error": repr(KeyError(method))}


#: Header carrying the HMAC-SHA256 of a request body under ``worker_control_key``.
SIGNATURE_HEADER = "x-tq-signature"
#: Signed requests live at most this long (seconds) even without an ``expires`` header.
SIGNED_MAX_AGE_S = 60.0


def sign_body(key: str, body: bytes, expires: float) -> str:
    """The signature of a request: hex HMAC-SHA256 of the body and its ``expires`` header."""
    material = body + b"|" + repr(float(expires)).encode()
    return hmac.new(key.encode(), material, hashlib.sha256).hexdigest()


def sign_request(envelope_text: str, key: str) -> str:
    """The request envelope signed in ``x-tq-signature``. The signature covers the body and
    the ``expires`` header, and a worker refuses it once expired, so a captured request cannot
    be replayed later (``expires`` is set to at most a minute ahead when missing)."""
    env = parse_envelope(envelope_text)
    data = json.loads(envelope_text)
    headers = data["headers"]
    expires = _number(headers.get("expires"), 0.0)
    now = time.time()
    if not expires or expires > now + SIGNED_MAX_AGE_S:
        expires = now + SIGNED_MAX_AGE_S
    headers["expires"] = expires
    headers[SIGNATURE_HEADER] = sign_body(key, env.body, expires)
    return json.dumps(data)


def is_signed_by(envelope_text: str | bytes, key: str, now: float | None = None) -> bool:
    """Whether the request carries a valid, unexpired signature under ``key``."""
    try:
        env = parse_envelope(envelope_text)
    except ProtocolError:
        return False
    given = env.headers.get(SIGNATURE_HEADER)
    expires = _number(env.headers.get("expires"), 0.0)
    if not isinstance(given, str) or expires < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(given, sign_body(key, env.body, expires))
