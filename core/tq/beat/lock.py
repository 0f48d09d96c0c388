"""Leader election for beat: one Redis key with a random token and a TTL.

Owns the lock protocol, so that of several beat processes (or ``-B`` workers) only one sends:

* acquire: ``SET <key> <token> NX PX <ttl_ms>``;
* renew: a Lua compare-and-``PEXPIRE`` that only extends the key while it still holds our token;
* release: a Lua compare-and-``DEL`` that never deletes another holder's lock.

A leader that dies stops renewing, the key expires after at most ``ttl_s``, and the next standby
poll takes it. The lock is an optimisation, not the safety net: a paused leader whose key expired
may briefly overlap a new one, and ``BeatStore.claim`` keeps that overlap from sending anything
twice. The key name comes from ``tq.beat.store``; this module spells none. Must not import
``tq.worker`` or the console.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

import redis

from tq.beat.store import translated_errors
from tq.clock import Clock

logger = logging.getLogger(__name__)

# Fraction of the TTL a holder trusts its lock for after a successful SET / renew, to allow for
# the Redis server's and this process's clocks running at slightly different rates.
_CLOCK_DRIFT_FACTOR = 0.01

# Extend the key's TTL only if it still holds our token. Returns 1 if extended.
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# Delete the key only if it still holds our token. Returns 1 if deleted.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def _new_token() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"


class LeaderLock:
    """A Redis lock held by one process at a time, with a TTL that a live holder renews.

    Not thread-safe: one thread (the beat loop) calls it.

    Args:
        client: a redis-py client for the broker.
        key: the lock's key (``tq.beat.store.lock_key``).
        ttl_s: how long the lock outlives its holder's last renewal.
        clock: where monotonic time comes from (to know how long a renewal is trusted).
    """

    def __init__(self, client: redis.Redis, key: str, ttl_s: float, clock: Clock) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be more than 0")
        self._client = client
        self._key = key
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._clock = clock
        self._token = _new_token()
        self._held = False
        self._valid_until = 0.0
        self._renew = client.register_script(_RENEW_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    @property
    def token(self) -> str:
        return self._token

    @property
    def ttl_s(self) -> float:
        return self._ttl_ms / 1000

    def hold(self) -> bool:
        """Renew the lock if we hold it, else try to take it; ``True`` while we lead."""
        return self.renew() if self._held else self.acquire()

    def acquire(self) -> bool:
        """Take the lock if nobody holds it."""
        started = self._clock.monotonic()
        with translated_errors("take the beat lock"):
            taken = self._client.set(self._key, self._token, nx=True, px=self._ttl_ms)
        self._update(bool(taken), started)
        if taken:
            logger.info("beat: became leader (%s)", self._token)
        return self._held

    def renew(self) -> bool:
        """Extend our lock; ``False`` (and no longer held) if it expired or was taken."""
        started = self._clock.monotonic()
        with translated_errors("renew the beat lock"):
            renewed = self._renew(keys=[self._key], args=[self._token, self._ttl_ms])
        if not renewed and self._held:
            logger.warning("beat: lost the leader lock (%s)", self._token)
        self._update(bool(renewed), started)
        return self._held

    def release(self) -> bool:
        """Give the lock up if we hold it, so a standby can take over at once.

        A standby returns at once without a round trip (so it stops promptly even when Redis
        is unreachable); ``True`` if our key was deleted.
        """
        if not self._held:
            return False
        self._held = False
        self._valid_until = 0.0
        with translated_errors("release the beat lock"):
            released = bool(self._release(keys=[self._key], args=[self._token]))
        if released:
            logger.info("beat: released the leader lock (%s)", self._token)
        return released

    def is_valid(self) -> bool:
        """Whether we hold the lock and its last renewal is recent enough to trust."""
        return self._held and self._clock.monotonic() < self._valid_until

    def holder(self) -> str | None:
        """The token of whoever holds the lock now, if anyone."""
        with translated_errors("read the beat lock"):
            value = self._client.get(self._key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def _update(self, held: bool, started: float) -> None:
        self._held = held
        trusted_s = self.ttl_s * (1 - _CLOCK_DRIFT_FACTOR)
        self._valid_until = started + trusted_s if held else 0.0
