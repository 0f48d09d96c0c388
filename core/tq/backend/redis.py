"""Results on Redis in Celery's layout: ``celery-task-meta-<id>`` plus a PUBLISH on the
channel of the same name, so waiting readers wake at once (no polling while subscribed).

Backend transport options (``result_backend_transport_options``): ``global_keyprefix`` (an
``_`` is appended unless it already ends in ``: _ - .``, as Celery does), socket timeouts.
May use ``tq.transport.connection`` to build clients and nothing else of the transport.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from typing import Any

import redis

from tq import states
from tq.backend import meta as m
from tq.exceptions import BackendError, TimeoutError
from tq.transport.connection import HeldConnection, make_client, mask_url

logger = logging.getLogger(__name__)

#: ``result_expires`` default, seconds.
DEFAULT_EXPIRES = 86400
#: Suffixes of the chord keys (Celery 5.7): size, size adjustment, joined parts, de-dup set,
#: dispatch claim. They follow ``celery-taskset-meta-<group id>``.
CHORD_PARTS = (".s", ".t", ".j", ".d", ".c")
#: While waiting, re-read the key this often in case a PUBLISH was missed (a reconnect).
SAFETY_POLL_S = 1.0


@cache
def _lua(name: str) -> str:
    return resources.files("tq.backend").joinpath("lua", f"{name}.lua").read_text("utf-8")


def _backend_prefix(prefix: str) -> str:
    if prefix and prefix[-1] not in ":_-.":
        return prefix + "_"
    return prefix


class RedisBackend:
    """Store, read and wait for task results.

    Args:
        url: backend URL (``redis://…``).
        options: ``result_backend_transport_options``.
        expires: ``result_expires`` in seconds (0/None: keep forever).
    """

    def __init__(
        self,
        url: str,
        options: dict[str, Any] | None = None,
        expires: float | None = DEFAULT_EXPIRES,
    ) -> None:
        self.url = url
        self.options = dict(options or {})
        self.prefix = _backend_prefix(str(self.options.get("global_keyprefix") or ""))
        self.expires = int(expires or 0)
        self._client: redis.Redis | None = None
        self._store: Any = None
        #: One subscriber connection per thread, kept between waits (a new PubSub per wait
        #: would connect, and disconnect when closed: several round trips per ``get``).
        self._local = threading.local()
        self._held = HeldConnection(lambda: self.client)

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = make_client(self.url, self.options)
            self._store = self._client.register_script(_lua("store"))
        return self._client

    def _store_sha(self) -> str:
        self.client  # noqa: B018 - registers the store script on first use
        return str(self._store.sha)

    def close(self) -> None:
        self._held.close()
        pubsub = getattr(self._local, "pubsub", None)
        self._local.pubsub = None
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()
        if self._client is not None:
            self._client.close()
        self._client = None

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise BackendError(f"result backend {mask_url(self.url)}: {exc}") from exc

    def key(self, task_id: str) -> str:
        return f"{self.prefix}{m.TASK_KEY_PREFIX}{task_id}"

    def group_key(self, group_id: str) -> str:
        return f"{self.prefix}{m.GROUP_KEY_PREFIX}{group_id}"

    def chord_key(self, group_id: str, part: str) -> str:
        """A chord key of Celery 5.7's layout: ``part`` is one of ``CHORD_PARTS``."""
        if part not in CHORD_PARTS:
            raise ValueError(f"unknown chord key part {part!r}")
        return self.group_key(group_id) + part

    # -- writing ------------------------------------------------------------------------------
    def store_result(
        self,
        task_id: str,
        result: Any,
        status: str,
        traceback: str | None = None,
        children: list[Any] | None = None,
        extra: dict[str, Any] | None = None,
        expires: float | None = None,
    ) -> bool:
        """Write the meta and publish it (never overwriting a stored SUCCESS).

        Returns:
            False if a SUCCESS was already stored and nothing was written.
        """
        meta = m.build_meta(task_id, status, result, traceback, children, extra)
        return self.store_meta(task_id, meta, expires)

    def store_meta(self, task_id: str, meta: dict[str, Any], expires: float | None = None) -> bool:
        ttl = self.expires if expires is None else int(expires)
        client = self.client
        written = self._call(
            self._store, keys=[self.key(task_id)], args=[m.dumps_meta(meta), ttl], client=client
        )
        return bool(written)

    def store_many(self, items: Sequence[tuple[str, str]], expires: float | None = None) -> None:
        """Store many ready metas (``(task_id, meta JSON)``) in one pipelined round trip, each
        with the same never-overwrite-SUCCESS script as ``store_meta``."""
        ttl = self.expires if expires is None else int(expires)
        sha = self._store_sha()
        todo = list(items)
        for _ in range(2):
            # EVALSHA on a held connection: a registered script in a redis-py pipeline costs
            # a SCRIPT EXISTS round trip per execute, and the pipeline object itself about
            # twice the CPU. After a SCRIPT FLUSH or a new server, load and resend.
            commands = [("EVALSHA", sha, 1, self.key(t), text, ttl) for t, text in todo]
            replies = self._call(self._held.run, commands)
            missing = []
            for item, reply in zip(todo, replies, strict=True):
                if isinstance(reply, redis.exceptions.NoScriptError):
                    missing.append(item)
                elif isinstance(reply, Exception):
                    raise BackendError(f"result backend {mask_url(self.url)}: {reply}")
            if not missing:
                return
            self._call(self.client.script_load, _lua("store"))
            todo = missing
        raise BackendError(f"result backend {mask_url(self.url)}: the store script would not load")

    def forget(self, task_id: str) -> None:
        self._call(self.client.delete, self.key(task_id))

    def mark_revoked_if_unready(self, task_id: str, reason: str = "revoked") -> bool:
        """Celery 5.7's revoke behaviour: store REVOKED unless a state is already final."""
        current = self.get_meta(task_id)
        if current.get("status") in states.READY_STATES:
            return False
        from tq.exceptions import TaskRevokedError

        meta = m.build_meta(task_id, states.REVOKED, TaskRevokedError(reason))
        meta["children"] = None
        return self.store_meta(task_id, meta)

    def save_group(self, group_id: str, result_tuple: Any) -> None:
        """``GroupResult.save()``: ``celery-taskset-meta-<gid>`` + PUBLISH."""
        text = m.dumps_meta({"result": result_tuple})
        pipe = self.client.pipeline(transaction=True)
        key = self.group_key(group_id)
        pipe.set(key, text, ex=self.expires or None)  # SET … EX: redis-py 8 deprecates setex
        pipe.publish(key, text)
        self._call(pipe.execute)

    def restore_group(self, group_id: str) -> Any:
        raw = self._call(self.client.get, self.group_key(group_id))
        if raw is None:
            return None
        from tq.protocol.serializers import loads_json

        data = loads_json(raw)
        return data.get("result") if isinstance(data, dict) else None

    def delete_group(self, group_id: str) -> None:
        self._call(self.client.delete, self.group_key(group_id))

    # -- reading ------------------------------------------------------------------------------
    def get_meta(self, task_id: str) -> dict[str, Any]:
        return m.loads_meta(self._call(self.client.get, self.key(task_id)), task_id)

    def get_many(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        if not task_ids:
            return []
        raws = self._call(self.client.mget, [self.key(t) for t in task_ids])
        return [m.loads_meta(r, t) for r, t in zip(raws, task_ids, strict=True)]

    def _subscriber(self) -> Any:
        """This thread's subscriber (made again after a fork or an error)."""
        local = self._local
        pubsub = getattr(local, "pubsub", None)
        client = self.client
        if pubsub is None or local.pid != os.getpid() or local.client is not client:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            local.pubsub, local.pid, local.client = pubsub, os.getpid(), client
        return pubsub

    def _release_subscriber(self, pubsub: Any, key: str, ok: bool) -> None:
        """Unsubscribe, keeping the connection for the next wait; after an error (or an
        interrupted wait, whose replies may be half read) drop it instead."""
        if ok:
            try:
                pubsub.unsubscribe(key)
                return
            except redis.RedisError:
                logger.debug("unsubscribe failed", exc_info=True)
        self._local.pubsub = None
        try:
            pubsub.close()
        except redis.RedisError:
            logger.debug("closing the subscriber failed", exc_info=True)

    def wait_for(
        self,
        task_id: str,
        timeout: float | None = None,
        on_message: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Block until the task reaches a ready state; returns its meta.

        Subscribes to the result channel *before* reading the key, so no state change can slip
        between the read and the wait; unsubscribes before returning.

        Raises:
            TimeoutError: not ready within ``timeout`` seconds.
        """
        key = self.key(task_id)
        channel = key.encode()
        deadline = None if timeout is None else time.monotonic() + timeout
        pubsub = self._subscriber()
        ok = False
        try:
            self._call(pubsub.subscribe, key)
            meta = self.get_meta(task_id)
            last: dict[str, Any] | None = None
            while True:
                # Every new meta is reported, not only state changes: a task calling
                # update_state("PROGRESS", meta=...) repeatedly streams each of them.
                if meta != last and on_message is not None:
                    on_message(meta)
                last = meta
                if meta.get("status") in states.READY_STATES:
                    ok = True
                    return meta
                wait = SAFETY_POLL_S
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        ok = True
                        raise TimeoutError(
                            f"task {task_id} was not ready within {timeout} s "
                            f"(state {meta.get('status')})"
                        )
                msg = self._call(pubsub.get_message, timeout=wait)
                if msg is None:
                    meta = self.get_meta(task_id)
                elif msg.get("type") == "message" and msg.get("channel") == channel:
                    # (a message for an earlier wait's channel, published before its
                    # unsubscribe was read, is skipped)
                    meta = m.loads_meta(msg["data"], task_id)
        finally:
            self._release_subscriber(pubsub, key, ok)
