"""Content-type registry: JSON with kombu's type tags, msgpack and pickle by opt-in.

``accept_content`` is enforced here, before any deserializer runs (RELIABILITY.md S1): a
content type that is not accepted raises ``ContentDisallowed`` without touching the payload.
Pure: imports only the standard library, tq.exceptions and (lazily) msgpack.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import pickle
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tq.exceptions import ContentDisallowed, DecodeError, ProtocolError

JSON = "application/json"
MSGPACK = "application/x-msgpack"
PICKLE = "application/x-python-serialize"
#: Celery's ``auth`` serializer (signed bodies, tq.protocol.signing); registered on set-up.
AUTH = "application/data"

#: Short names users write in ``accept_content`` / ``task_serializer`` → content types.
ALIASES = {
    "json": JSON,
    "msgpack": MSGPACK,
    "pickle": PICKLE,
    "auth": AUTH,
    JSON: JSON,
    MSGPACK: MSGPACK,
    PICKLE: PICKLE,
    "application/data": "application/data",
    "application/text": "application/text",
}

#: JSON nesting deeper than this is refused as a decode error (RELIABILITY.md S10).
MAX_JSON_DEPTH = 1000


def _encode_default(obj: Any) -> Any:
    """kombu's JSON type tags for values JSON has no type for."""
    if isinstance(obj, dt.datetime):
        return {"__type__": "datetime", "__value__": obj.isoformat()}
    if isinstance(obj, dt.date):
        return {"__type__": "date", "__value__": obj.isoformat()}
    if isinstance(obj, dt.time):
        return {"__type__": "time", "__value__": obj.isoformat()}
    if isinstance(obj, decimal.Decimal):
        return {"__type__": "decimal", "__value__": str(obj)}
    if isinstance(obj, uuid.UUID):
        return {"__type__": "uuid", "__value__": {"hex": obj.hex}}
    if isinstance(obj, bytes | bytearray):
        try:
            return {"__type__": "bytes", "__value__": bytes(obj).decode("utf-8")}
        except UnicodeDecodeError:
            return {"__type__": "base64", "__value__": base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if hasattr(obj, "__json__"):
        return obj.__json__()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "decimal": decimal.Decimal,
    "uuid": lambda v: uuid.UUID(hex=v["hex"]) if isinstance(v, dict) else uuid.UUID(v),
    "bytes": lambda v: v.encode("utf-8"),
    "base64": lambda v: base64.b64decode(v),
}


def _object_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 2 and "__type__" in obj and "__value__" in obj:
        decoder = _DECODERS.get(obj["__type__"])
        if decoder is None:
            raise DecodeError(f"unknown JSON type tag {obj['__type__']!r}")
        return decoder(obj["__value__"])
    return obj


_ENCODER = json.JSONEncoder(default=_encode_default, ensure_ascii=True)
_DECODER = json.JSONDecoder(object_hook=_object_hook)


def dumps_json(value: Any) -> str:
    """JSON text as kombu writes it (type tags for datetimes, UUIDs, bytes, decimals)."""
    return _ENCODER.encode(value)


def _check_depth(text: str | bytes) -> None:
    # A cheap bracket count guards the recursive decoder against deeply nested input.
    if len(text) < MAX_JSON_DEPTH:
        return
    depth = 0
    deepest = 0
    in_string = False
    escaped = False
    data = text if isinstance(text, str) else text.decode("utf-8", "replace")
    for ch in data:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                raise DecodeError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        elif ch in "]}":
            depth -= 1


def loads_json(text: str | bytes) -> Any:
    """Parse JSON, decoding kombu's type tags; any failure is a ``DecodeError``."""
    try:
        if isinstance(text, bytes | bytearray):
            text = bytes(text).decode("utf-8")
        if "[[[[" in text or "{{" in text or len(text) > 100_000:
            _check_depth(text)
        return _DECODER.decode(text)
    except DecodeError:
        raise
    except (
        ValueError, TypeError, KeyError, AttributeError, ArithmeticError, RecursionError
    ) as exc:
        # AttributeError / ArithmeticError: a type tag whose value has the wrong type
        # ({"__type__": "bytes", "__value__": null}, a decimal that is not a number).
        raise DecodeError(f"invalid JSON: {exc}") from exc


def _msgpack() -> Any:
    try:
        import msgpack
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ProtocolError("msgpack is not installed: pip install msgpack") from exc
    return msgpack


@dataclass(frozen=True, slots=True)
class Serializer:
    """How one content type turns values into bytes and back."""

    content_type: str
    encoding: str  # the content-encoding header: "utf-8" or "binary"
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]


def _json_dumps(value: Any) -> bytes:
    return dumps_json(value).encode("utf-8")


def _msgpack_dumps(value: Any) -> bytes:
    packed: bytes = _msgpack().packb(value, use_bin_type=True)
    return packed


def _msgpack_loads(data: bytes) -> Any:
    try:
        return _msgpack().unpackb(data, raw=False)
    except Exception as exc:
        raise DecodeError(f"invalid msgpack: {exc}") from exc


def _pickle_loads(data: bytes) -> Any:
    # Reached only when "pickle" is in accept_content (checked by Registry.loads).
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise DecodeError(f"invalid pickle: {exc}") from exc


SERIALIZERS: dict[str, Serializer] = {
    JSON: Serializer(JSON, "utf-8", _json_dumps, loads_json),
    MSGPACK: Serializer(MSGPACK, "binary", _msgpack_dumps, _msgpack_loads),
    PICKLE: Serializer(PICKLE, "binary", lambda v: pickle.dumps(v, protocol=4), _pickle_loads),
}


def _not_set_up(ctype: str) -> str:
    if ctype == AUTH:
        return (
            "the auth serializer is not set up (set security_key, security_certificate and "
            "security_cert_store, then call app.setup_security())"
        )
    return f"no deserializer for content type {ctype}"


def content_type_of(name: str) -> str:
    """The content type for a serializer name (``json`` → ``application/json``)."""
    try:
        return ALIASES[name]
    except KeyError:
        raise ProtocolError(
            f"unknown serializer {name!r}; choose one of json, msgpack, pickle, auth"
        ) from None


def normalize_accept(accept: Iterable[str] | None) -> frozenset[str]:
    """``accept_content`` as a set of content types (names or types accepted)."""
    if accept is None:
        return frozenset({JSON})
    return frozenset(ALIASES.get(a, a) for a in accept)


def dumps(value: Any, serializer: str = "json") -> tuple[str, str, bytes]:
    """Serialize ``value``; returns ``(content_type, content_encoding, payload)``."""
    ctype = content_type_of(serializer)
    ser = SERIALIZERS.get(ctype)
    if ser is None:
        raise ProtocolError(_not_set_up(ctype))
    try:
        return ser.content_type, ser.encoding, ser.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"cannot serialize with {serializer}: {exc}") from exc


def loads(payload: bytes, content_type: str | None, accept: frozenset[str]) -> Any:
    """Deserialize ``payload`` if (and only if) ``content_type`` is accepted.

    Raises:
        ContentDisallowed: the content type is not in ``accept`` (nothing was parsed).
        DecodeError: the payload is not valid for its content type.
    """
    ctype = content_type or JSON
    if ctype not in accept:
        raise ContentDisallowed(
            f"Refusing to deserialize untrusted content of type {ctype} "
            f"(accepted: {', '.join(sorted(accept))})"
        )
    ser = SERIALIZERS.get(ctype)
    if ser is None:
        raise ContentDisallowed(_not_set_up(ctype))
    return ser.loads(payload)
