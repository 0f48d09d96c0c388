"""Chord joins on Redis in Celery 5.7's layout, so tq and Celery workers can finish parts of
the same chord side by side.

Keys (``celery-taskset-meta-<gid>`` + suffix): ``.s`` size, ``.t`` size adjustment, ``.j``
joined parts (ZSET scored by group index), ``.d`` de-dup set, ``.c`` dispatch claim. Each
finished header task runs ``lua/chord_part.lua`` (record once, count, claim atomically); the
one worker that wins the claim reads the parts in index order, extends the claim
(``chord_extend.lua``), sends the body and cleans up (``chord_cleanup.lua``, leaving
``.c = "done"``). A failed part makes the body fail with ``ChordError``.

Sending the body and recording its failure are app-level acts, so the caller passes them in as
``dispatch`` and ``fail``; this module imports nothing above the backend layer.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tq import states
from tq.backend import meta as m
from tq.backend.redis import RedisBackend, _lua
from tq.exceptions import ChordError, RemoteError
from tq.protocol.serializers import dumps_json, loads_json

logger = logging.getLogger(__name__)

#: Seconds ``.c`` keeps ``"done"`` after a chord finished, at least (Celery: 300).
DONE_MARK_MIN_S = 300
#: Lower bound of the dispatch claim's lifetime in seconds (Celery: 5).
CLAIM_MIN_S = 5
#: Publish retries assumed when estimating how long sending the body may take (Celery's
#: default ``task_publish_retry_policy``: 3 retries, waits 0, 0.2, 0.4 s).
PUBLISH_RETRIES = 3
PUBLISH_RETRY_WAITS_S = (0.0, 0.2, 0.4)


@dataclass(frozen=True, slots=True)
class ChordSettings:
    """The settings a chord join reads (``result_chord_*``, ``result_expires``)."""

    chord_expires_s: int = 86400
    result_expires_s: int = 86400
    join_timeout_s: float | None = 3.0
    connection_timeout_s: float | None = 4.0
    ordered: bool = True

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any]) -> ChordSettings:
        expires = int(conf.get("result_expires") or 0)
        chord = conf.get("result_chord_expires")
        options = conf.get("result_backend_transport_options") or {}
        return cls(
            chord_expires_s=expires if chord is None else int(chord),
            result_expires_s=expires,
            join_timeout_s=conf.get("result_chord_join_timeout"),
            connection_timeout_s=conf.get("broker_connection_timeout"),
            ordered=bool(options.get("result_chord_ordered", True)),
        )

    @property
    def group_expires_s(self) -> int:
        """Expiry of the group key: never shorter than ``result_expires`` (0: none)."""
        if not self.chord_expires_s or not self.result_expires_s:
            return 0
        return max(self.chord_expires_s, self.result_expires_s)

    @property
    def claim_s(self) -> int:
        """Lifetime of the claim while joining: twice the join timeout, at least 5 s."""
        return max(CLAIM_MIN_S, int((self.join_timeout_s or 5.0) * 2))

    @property
    def publish_claim_s(self) -> int:
        """Lifetime of the claim while sending the body (connection attempts and retries)."""
        timeout = self.connection_timeout_s
        if timeout is None:
            return self.claim_s * 2
        timeout = max(0.0, float(timeout))
        spent = (PUBLISH_RETRIES + 1) * timeout + sum(PUBLISH_RETRY_WAITS_S) + max(timeout, 1)
        return max(self.claim_s, math.ceil(spent))

    @property
    def done_s(self) -> int:
        return max(self.claim_s * 2, DONE_MARK_MIN_S)


@dataclass(frozen=True, slots=True)
class ChordPart:
    """One finished header task: its ids, its state and its return value or exception."""

    group_id: str
    task_id: str
    group_index: int | None
    state: str
    result: Any


def chord_expires(conf: Mapping[str, Any]) -> int:
    """Expiry of ``.s`` and friends: ``result_chord_expires``, else ``result_expires``."""
    return ChordSettings.from_conf(conf).chord_expires_s


def set_chord_size(backend: RedisBackend, group_id: str, size: int, expires_s: int) -> None:
    """Start (or restart) a chord: forget an old claim, then store its size."""
    pipe = backend.client.pipeline(transaction=True)
    pipe.delete(backend.chord_key(group_id, ".c"))
    pipe.set(backend.chord_key(group_id, ".s"), size, ex=expires_s or None)
    backend._call(pipe.execute)


def encode_part(part: ChordPart) -> str:
    """``[1, tid, state, result]`` as Celery stores it in ``.j``."""
    value = part.result
    if part.state in states.EXCEPTION_STATES and isinstance(value, BaseException):
        value = m.encode_exception(value)
    try:
        return dumps_json([1, part.task_id, part.state, value])
    except (TypeError, ValueError):
        return dumps_json([1, part.task_id, part.state, repr(value)])


def exception_repr(exc: BaseException) -> str:
    """``repr`` of an exception as Celery would show it (a RemoteError shows its stored type)."""
    if isinstance(exc, RemoteError):
        return f"{exc.exc_type}({', '.join(repr(a) for a in exc.args)})"
    return repr(exc)


def decode_parts(raw: list[Any]) -> list[Any]:
    """The results of the parts, in order.

    Raises:
        ChordError: a part failed or was revoked ("Dependency <tid> raised ...").
    """
    values = []
    for item in raw:
        _, tid, state, value = loads_json(item)
        if state in states.EXCEPTION_STATES:
            value = m.decode_exception(value)
        if state in states.PROPAGATE_STATES:
            error = ChordError(f"Dependency {tid} raised {exception_repr(value)}")
            if isinstance(value, Exception):
                error.__cause__ = value
            raise error
        values.append(value)
    return values


def on_chord_part_return(
    backend: RedisBackend,
    part: ChordPart,
    settings: ChordSettings,
    dispatch: Callable[[list[Any]], None],
    fail: Callable[[ChordError], None],
) -> None:
    """Record ``part``; if it completes the chord and this worker wins the claim, send the
    body with the results in group-index order (``dispatch``), or fail it (``fail``).

    Never raises for a chord problem: those are logged and handed to ``fail``.
    """
    gid = part.group_id
    keys = {p: backend.chord_key(gid, p) for p in (".j", ".t", ".s", ".d", ".c")}
    token = uuid.uuid4().hex
    script = backend.client.register_script(_lua("chord_part"))
    score = "+inf" if part.group_index is None else str(part.group_index)
    count, adjust, size, claimed = backend._call(
        script,
        keys=[keys[".j"], keys[".t"], keys[".s"], keys[".d"], backend.group_key(gid), keys[".c"]],
        args=[part.task_id, encode_part(part), "1" if settings.ordered else "0", score,
              settings.chord_expires_s, settings.group_expires_s, settings.claim_s, token],
    )
    if count == -1 or not size:
        return
    total = int(size) + int(adjust or 0)
    if count != total or not claimed:
        return
    try:
        values = _read_parts(backend, keys[".j"], total, settings.ordered)
        if not _extend_claim(backend, keys, token, settings.publish_claim_s):
            logger.warning("Chord body for %r not sent: the claim is no longer this worker's",
                           gid)
            return
        _dispatch(backend, gid, keys, token, settings, values, dispatch, fail)
    except ChordError as exc:
        logger.error("Chord %r failed: %s", gid, exc)
        _fail_and_drop_size(backend, keys[".s"], exc, fail)
    except Exception as exc:
        logger.exception("Chord %r could not be joined", gid)
        _fail_and_drop_size(backend, keys[".s"], ChordError(f"Join error: {exc!r}"), fail)


def _read_parts(backend: RedisBackend, jkey: str, total: int, ordered: bool) -> list[Any]:
    client = backend.client
    if ordered:
        raw = backend._call(client.zrange, jkey, 0, -1)
    else:
        raw = backend._call(client.lrange, jkey, 0, total)
    return decode_parts(list(raw))


def _extend_claim(backend: RedisBackend, keys: dict[str, str], token: str, ttl_s: int) -> bool:
    script = backend.client.register_script(_lua("chord_extend"))
    return bool(backend._call(script, keys=[keys[".c"], keys[".s"]], args=[token, ttl_s]))


def _dispatch(
    backend: RedisBackend,
    gid: str,
    keys: dict[str, str],
    token: str,
    settings: ChordSettings,
    values: list[Any],
    dispatch: Callable[[list[Any]], None],
    fail: Callable[[ChordError], None],
) -> None:
    try:
        dispatch(values)
    except Exception as exc:
        logger.exception("Chord body for %r could not be sent", gid)
        fail(ChordError(f"Callback error: {exc!r}"))
    finally:
        cleanup = backend.client.register_script(_lua("chord_cleanup"))
        cleaned = backend._call(
            cleanup,
            keys=[keys[".c"], keys[".j"], keys[".t"], keys[".s"], keys[".d"]],
            args=[token, settings.done_s],
        )
        if not cleaned:
            logger.warning("Chord %r: the claim was lost before cleanup; its keys expire", gid)


def _fail_and_drop_size(
    backend: RedisBackend, skey: str, exc: ChordError, fail: Callable[[ChordError], None]
) -> None:
    """Fail the body, then drop ``.s`` so a late copy of a part does not fail it again."""
    try:
        fail(exc)
    finally:
        backend._call(backend.client.delete, skey)
