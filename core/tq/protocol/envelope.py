"""kombu's Redis envelope: one JSON object carrying an encoded body, headers and properties.

This module turns envelope text into an ``Envelope`` value and back. It knows the envelope's
fields (``body``, ``content-type``, ``content-encoding``, ``headers``, ``properties`` with
``delivery_tag``, ``delivery_info``, ``priority``, ``body_encoding``) and nothing about what the
body means. Pure: standard library and tq.exceptions only.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from typing import Any

from tq.exceptions import DecodeError, MessageTooLarge

#: Default upper bound on an envelope's size in bytes (``broker_max_message_size``).
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded envelope. ``body`` is the serialized body (base64 already removed)."""

    body: bytes
    content_type: str
    content_encoding: str
    headers: dict[str, Any]
    properties: dict[str, Any]

    @property
    def delivery_tag(self) -> str:
        return str(self.properties.get("delivery_tag", ""))

    @property
    def delivery_info(self) -> dict[str, Any]:
        info = self.properties.get("delivery_info")
        return info if isinstance(info, dict) else {}

    @property
    def priority(self) -> int:
        return clamp_priority(self.properties.get("priority"))


def clamp_priority(value: Any) -> int:
    """Priorities as kombu treats them: ints clamped to 0..9, anything else 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return min(max(value, 0), 9)


def new_tag() -> str:
    """A fresh delivery tag (kombu uses uuid4 strings)."""
    return uuid4_str()


def uuid4_str() -> str:
    """``str(uuid.uuid4())`` without building a UUID object (it is on every send)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def parse_envelope(raw: str | bytes, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Envelope:
    """Decode envelope text.

    Raises:
        MessageTooLarge: ``raw`` is longer than ``max_size``.
        DecodeError: not JSON, not an object, or a field has the wrong type.
    """
    if len(raw) > max_size:
        raise MessageTooLarge(f"message of {len(raw)} bytes is over the {max_size} byte limit")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise DecodeError(f"envelope is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DecodeError(f"envelope is a JSON {type(data).__name__}, not an object")
    headers = data.get("headers")
    if headers is None:
        headers = {}
    properties = data.get("properties")
    if not isinstance(headers, dict):
        raise DecodeError("envelope 'headers' is not an object")
    if not isinstance(properties, dict):
        raise DecodeError("envelope has no 'properties' object")
    body = data.get("body", "")
    encoding = properties.get("body_encoding")
    if encoding == "base64":
        if not isinstance(body, str):
            raise DecodeError("base64 body is not a string")
        try:
            payload = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DecodeError(f"body is not valid base64: {exc}") from exc
    elif isinstance(body, str):
        payload = body.encode("utf-8")
    elif isinstance(body, bytes):
        payload = body
    else:
        # A body embedded as a JSON value instead of text: keep its JSON form.
        payload = json.dumps(body).encode("utf-8")
    return Envelope(
        body=payload,
        content_type=str(data.get("content-type") or "application/json"),
        content_encoding=str(data.get("content-encoding") or "utf-8"),
        headers=headers,
        properties=properties,
    )


def build_envelope(
    body: bytes,
    content_type: str,
    content_encoding: str,
    headers: dict[str, Any],
    properties: dict[str, Any],
) -> str:
    """Envelope text with a base64 body, as kombu's Redis transport writes it."""
    props = dict(properties)
    props["body_encoding"] = "base64"
    if "delivery_tag" not in props:
        props["delivery_tag"] = new_tag()
    return json.dumps(
        {
            "body": base64.b64encode(body).decode("ascii"),
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": headers,
            "properties": props,
        }
    )


def dumps_envelope(envelope: Envelope) -> str:
    """Re-encode an ``Envelope`` (used when a message is changed and sent again)."""
    return build_envelope(
        envelope.body,
        envelope.content_type,
        envelope.content_encoding,
        envelope.headers,
        envelope.properties,
    )


def mark_redelivered(raw: str | bytes) -> str:
    """The envelope text with ``redelivered`` set, as kombu's restore writes it."""
    data = json.loads(raw)
    data.setdefault("headers", {})["redelivered"] = True
    data["properties"].setdefault("delivery_info", {})["redelivered"] = True
    return json.dumps(data)
