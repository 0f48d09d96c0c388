"""Protocol-2 task messages: the one place the task wire format is defined.

``build_task`` writes headers, properties and the ``[args, kwargs, embed]`` body exactly as
Celery 5's ``as_task_v2`` does; ``TaskHeaders.parse`` and ``decode_task_body`` read them back,
turning every malformation into a ``ProtocolError`` with a reason a log line can carry.
Pure: standard library, tq.exceptions and the sibling protocol modules.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from tq.exceptions import DecodeError, InvalidTaskError, ProtocolError
from tq.protocol import compression, serializers
from tq.protocol.envelope import Envelope, build_envelope, clamp_priority, new_tag

#: argsrepr / kwargsrepr are cut to this many characters, as Celery does.
REPR_MAX = 1024

EMPTY_EMBED: dict[str, Any] = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def origin() -> str:
    """``gen<pid>@<hostname>``: the origin header of messages this process sends."""
    return _origin_of(os.getpid())


@functools.lru_cache(maxsize=8)
def _origin_of(pid: int) -> str:
    return f"gen{pid}@{socket.gethostname()}"


def safe_repr(value: Any, limit: int = REPR_MAX) -> str:
    """``repr`` cut to ``limit`` characters; never raises."""
    try:
        text = repr(value)
    except Exception as exc:  # a user's __repr__ may fail
        text = f"<unrepresentable {type(value).__name__}: {exc!r}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def to_iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def parse_datetime(value: Any, what: str) -> dt.datetime | None:
    """An ISO-8601 header as an aware UTC datetime (naive values are UTC, as in Celery)."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value, dt.UTC)
        except (OverflowError, OSError, ValueError) as exc:  # out of range, NaN
            raise InvalidTaskError(f"invalid {what} value {value!r}: {exc}") from exc
    if not isinstance(value, str):
        raise InvalidTaskError(f"invalid {what} value {value!r}: not a string")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidTaskError(f"invalid {what} value {value!r}: {exc}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


@dataclass(frozen=True, slots=True)
class TaskHeaders:
    """The headers of a task message a worker needs before it decodes the body."""

    id: str
    task: str
    eta: dt.datetime | None = None
    expires: dt.datetime | None = None
    retries: int = 0
    time_limit: float | None = None
    soft_time_limit: float | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    shadow: str | None = None
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    origin: str | None = None
    ignore_result: bool = False
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, headers: dict[str, Any]) -> TaskHeaders:
        """Read and check the protocol-2 headers.

        Raises:
            InvalidTaskError: ``task``/``id`` missing or a field malformed.
        """
        task = headers.get("task")
        task_id = headers.get("id")
        if not isinstance(task, str) or not task:
            raise InvalidTaskError("message has no 'task' header (not a task message?)")
        if not isinstance(task_id, str) or not task_id:
            raise InvalidTaskError(f"message for {task} has no 'id' header")
        retries = headers.get("retries") or 0
        if not isinstance(retries, int) or isinstance(retries, bool):
            raise InvalidTaskError(f"invalid retries value {retries!r}")
        hard, soft = _time_limits(headers.get("timelimit"))
        group_index = headers.get("group_index")
        if group_index is not None and not isinstance(group_index, int):
            raise InvalidTaskError(f"invalid group_index value {group_index!r}")
        return cls(
            id=task_id,
            task=task,
            eta=parse_datetime(headers.get("eta"), "ETA"),
            expires=parse_datetime(headers.get("expires"), "expires"),
            retries=retries,
            time_limit=hard,
            soft_time_limit=soft,
            root_id=_opt_str(headers.get("root_id")),
            parent_id=_opt_str(headers.get("parent_id")),
            group=_opt_str(headers.get("group")),
            group_index=group_index,
            shadow=_opt_str(headers.get("shadow")),
            argsrepr=_opt_str(headers.get("argsrepr")),
            kwargsrepr=_opt_str(headers.get("kwargsrepr")),
            origin=_opt_str(headers.get("origin")),
            ignore_result=bool(headers.get("ignore_result", False)),
            raw=headers,
        )


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _time_limits(value: Any) -> tuple[float | None, float | None]:
    if value is None:
        return None, None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise InvalidTaskError(f"invalid timelimit value {value!r}")
    out: list[float | None] = []
    for v in value:
        if v is None:
            out.append(None)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out.append(float(v))
        else:
            raise InvalidTaskError(f"invalid timelimit value {value!r}")
    return out[0], out[1]


def decode_task_body(
    envelope: Envelope, accept: frozenset[str], max_size: int
) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """The ``(args, kwargs, embed)`` of a task message.

    Raises:
        ContentDisallowed: content type not accepted (checked before decoding).
        DecodeError: the body is not decodable or does not have the protocol-2 shape.
    """
    payload = envelope.body
    method = envelope.headers.get("compression")
    if method:
        payload = compression.decompress(payload, str(method), max_size)
    body = serializers.loads(payload, envelope.content_type, accept)
    if isinstance(body, dict) and "args" in body:  # hybrid protocol-1 body, as Celery accepts
        args, kwargs, embed = body.get("args") or [], body.get("kwargs") or {}, {}
    elif isinstance(body, list | tuple) and len(body) == 3:
        args, kwargs, embed = body
    else:
        raise DecodeError(f"task body is a {type(body).__name__}, not [args, kwargs, embed]")
    if not isinstance(args, list | tuple):
        raise DecodeError(f"task args are a {type(args).__name__}, not a list")
    if not isinstance(kwargs, dict):
        raise DecodeError(f"task kwargs are a {type(kwargs).__name__}, not an object")
    if embed is None:
        embed = {}
    if not isinstance(embed, dict):
        raise DecodeError(f"task embed is a {type(embed).__name__}, not an object")
    return list(args), kwargs, embed


@dataclass(slots=True)
class TaskSpec:
    """Everything needed to write one task message (the options of ``apply_async``)."""

    name: str
    id: str
    args: tuple[Any, ...] | list[Any] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = "celery"
    exchange: str = ""
    routing_key: str | None = None
    priority: int | None = None
    eta: dt.datetime | None = None
    expires: dt.datetime | None = None
    retries: int = 0
    time_limit: float | None = None
    soft_time_limit: float | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group_id: str | None = None
    group_index: int | None = None
    shadow: str | None = None
    ignore_result: bool = False
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    origin: str | None = None
    reply_to: str | None = None
    callbacks: list[dict[str, Any]] | None = None
    errbacks: list[dict[str, Any]] | None = None
    chain: list[dict[str, Any]] | None = None
    chord: dict[str, Any] | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    serializer: str = "json"
    compression: str | None = None
    stamps: dict[str, Any] = field(default_factory=dict)
    replaced_task_nesting: int = 0


def build_task(spec: TaskSpec) -> tuple[str, str]:
    """Write ``spec`` as a Celery protocol-2 message.

    Returns:
        ``(delivery_tag, envelope_text)``.
    """
    headers: dict[str, Any] = {
        "lang": "py",
        "task": spec.name,
        "id": spec.id,
        "shadow": spec.shadow,
        "eta": to_iso(spec.eta),
        "expires": to_iso(spec.expires),
        "group": spec.group_id,
        "group_index": spec.group_index,
        "retries": spec.retries,
        "timelimit": [spec.time_limit, spec.soft_time_limit],
        "root_id": spec.root_id or spec.id,
        "parent_id": spec.parent_id,
        "argsrepr": spec.argsrepr if spec.argsrepr is not None else safe_repr(tuple(spec.args)),
        "kwargsrepr": spec.kwargsrepr if spec.kwargsrepr is not None else safe_repr(spec.kwargs),
        "origin": spec.origin or origin(),
        "ignore_result": spec.ignore_result,
        "replaced_task_nesting": spec.replaced_task_nesting,
        "stamped_headers": list(spec.stamps) or None,
        "stamps": spec.stamps,
    }
    if spec.headers:
        headers.update(spec.headers)
    embed = {
        "callbacks": spec.callbacks,
        "errbacks": spec.errbacks,
        "chain": spec.chain,
        "chord": spec.chord,
    }
    ctype, cenc, payload = serializers.dumps([list(spec.args), spec.kwargs, embed], spec.serializer)
    if spec.compression:
        headers["compression"], payload = compression.compress(payload, spec.compression)
    tag = new_tag()
    properties: dict[str, Any] = {
        "correlation_id": spec.id,
        "reply_to": spec.reply_to or "",
        "delivery_mode": 2,
        "delivery_info": {
            "exchange": spec.exchange,
            "routing_key": spec.routing_key if spec.routing_key is not None else spec.queue,
        },
        "priority": clamp_priority(spec.priority),
        "body_encoding": "base64",
        "delivery_tag": tag,
    }
    if spec.expires is not None:
        remaining = (spec.expires - dt.datetime.now(dt.UTC)).total_seconds()
        properties["expiration"] = str(max(int(remaining * 1000), 0))
    return tag, build_envelope(payload, ctype, cenc, headers, properties)


def check_size(envelope_text: str, max_size: int) -> None:
    """Refuse to publish a message over ``max_size`` bytes (RELIABILITY.md T21)."""
    if len(envelope_text) > max_size:
        raise ProtocolError(
            f"message of {len(envelope_text)} bytes is over broker_max_message_size "
            f"({max_size}); send a reference to the data instead, or raise the limit"
        )
