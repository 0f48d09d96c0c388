"""Checks a worker makes once at startup (RELIABILITY.md T14, T17, S14, S15).

* **Privileges (S14).** Running as root (uid, euid, gid or egid 0) logs a security warning, as
  Celery does. When ``accept_content`` also takes pickle, the worker refuses to start unless
  ``C_FORCE_ROOT`` is set in the environment (Celery's switch): a pickle message from anyone
  who can write to the broker would run code as root.
* **Exposure (S15).** A broker that is not on loopback, with no password or ACL user and no
  TLS, is reachable by anyone on the network path: warned.
* **Eviction (T14).** A broker whose ``maxmemory-policy`` is anything but ``noeviction`` may
  delete keys under memory pressure: with ``allkeys-*`` queues, ``unacked`` and results, with
  ``volatile-*`` results (they carry a TTL). Read from ``INFO memory``, falling back to
  ``CONFIG GET`` (either may be disabled or denied by an ACL; then nothing is said).
* **Clock (T17).** Delivery scores and the visibility sweep use the broker's clock, but ETA
  and countdown tasks fire by this host's clock: a skew above ``CLOCK_SKEW_WARN_S`` is warned.

Only the privilege check can stop a worker; every other check logs and never raises.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tq.exceptions import SecurityError

logger = logging.getLogger(__name__)

#: Content types that deserialize with pickle.
PICKLE_TYPES = frozenset({"pickle", "application/x-python-serialize"})
#: Warn when this host's clock and the broker's differ by more than this (seconds).
CLOCK_SKEW_WARN_S = 2.0
#: Hosts that are this machine.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})

ROOT_DISCOURAGED = (
    "SecurityWarning: You're running the worker with superuser privileges: this is absolutely "
    "not recommended! Run it as an unprivileged user (uid={uid} euid={euid} gid={gid} "
    "egid={egid})."
)
ROOT_DISALLOWED = (
    "Refusing to start: the worker runs with superuser privileges (uid={uid} euid={euid} "
    "gid={gid} egid={egid}) and accept_content takes pickle, so anyone who can write to the "
    "broker could run code as root. Run it as an unprivileged user, drop pickle from "
    "accept_content, or set C_FORCE_ROOT=1 in the environment if you really mean it."
)


@dataclass(frozen=True, slots=True)
class Ids:
    """The process's user and group ids."""

    uid: int
    euid: int
    gid: int
    egid: int

    @property
    def is_root(self) -> bool:
        return 0 in (self.uid, self.euid, self.gid, self.egid)


def process_ids() -> Ids:
    """This process's ids (a platform without them counts as unprivileged)."""
    get = lambda name: int(getattr(os, name)()) if hasattr(os, name) else 65535  # noqa: E731
    return Ids(get("getuid"), get("geteuid"), get("getgid"), get("getegid"))


def check_privileges(
    accept: Collection[str],
    ids: Callable[[], Ids] = process_ids,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """S14: warn when running as root; refuse (``SecurityError``) when pickle is accepted too,
    unless ``C_FORCE_ROOT`` is set. Returns True when it warned."""
    who = ids()
    if not who.is_root:
        return False
    env = os.environ if environ is None else environ
    fields = {"uid": who.uid, "euid": who.euid, "gid": who.gid, "egid": who.egid}
    if PICKLE_TYPES & set(accept) and not _truthy(env.get("C_FORCE_ROOT")):
        raise SecurityError(ROOT_DISALLOWED.format(**fields))
    logger.warning(ROOT_DISCOURAGED.format(**fields))
    return True


def _truthy(value: str | None) -> bool:
    return bool(value) and str(value).strip().lower() not in ("0", "false", "no", "off")


def exposure_warning(
    url: str, options: Mapping[str, Any] | None = None, what: str = "broker"
) -> str | None:
    """S15: the warning for a broker (or backend) URL reachable over the network with neither
    credentials nor TLS, or None."""
    opts = options or {}
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme in ("unix", "rediss", "valkeys") or opts.get("ssl_cert_reqs") is not None:
        return None
    hosts = []
    authenticated = bool(opts.get("password") or opts.get("username"))
    for piece in url.split(";") if scheme == "sentinel" else [url]:
        p = urlsplit(piece.strip())
        hosts.append(p.hostname or "localhost")
        authenticated = authenticated or bool(p.password or p.username)
    if scheme == "sentinel":
        # the sentinels' own password is separate from the data nodes'
        authenticated = authenticated or bool((opts.get("sentinel_kwargs") or {}).get("password"))
    exposed = [h for h in hosts if h.lower() not in LOOPBACK_HOSTS and not h.startswith("127.")]
    if not exposed or authenticated:
        return None
    harm = (
        "read and forge results"
        if what == "result backend"
        else "read messages, run tasks and control workers"
    )
    return (
        f"SecurityWarning: the {what} at {', '.join(exposed)} is not a loopback address and the "
        f"connection has no password or ACL user and no TLS: anyone who can reach it can {harm}. "
        "Use redis://user:password@host (an ACL user) and rediss:// (TLS)."
    )


def eviction_policy(client: Any) -> str | None:
    """The server's ``maxmemory-policy`` (INFO, else CONFIG GET), or None if both are denied."""
    try:
        info = client.info("memory")
        policy = info.get("maxmemory_policy")
        if policy:
            return str(policy)
    except Exception as exc:
        logger.debug("INFO memory failed: %s", exc)
    try:
        got = client.config_get("maxmemory-policy")
        policy = got.get("maxmemory-policy")
        return str(policy) if policy else None
    except Exception as exc:
        logger.debug("CONFIG GET maxmemory-policy failed: %s", exc)
    return None


def eviction_warning(policy: str | None, what: str, masked_url: str) -> str | None:
    """T14: the warning for an eviction policy that can delete tq's keys, or None."""
    if not policy or policy == "noeviction":
        return None
    if policy.startswith("volatile"):
        victims = "results and other keys with a TTL"
    else:
        victims = "queued messages, the unacked hash (messages being worked on) and results"
    return (
        f"The {what} {masked_url} has maxmemory-policy {policy}: under memory pressure Redis "
        f"will silently delete {victims}. Set maxmemory-policy noeviction on it (writes then "
        "fail with a clear error instead)."
    )


def check_eviction(targets: list[tuple[str, str, Any]]) -> list[str]:
    """T14: warn for each ``(what, masked url, client)`` whose server can evict."""
    out = []
    for what, masked, client in targets:
        text = eviction_warning(eviction_policy(client), what, masked)
        if text:
            logger.warning(text)
            out.append(text)
    return out


def clock_skew(local_time: float, server_time: float) -> str | None:
    """T17: the warning for a host clock that differs from the broker's, or None."""
    skew = local_time - server_time
    if abs(skew) <= CLOCK_SKEW_WARN_S:
        return None
    way = "ahead of" if skew > 0 else "behind"
    return (
        f"This host's clock is {abs(skew):.1f} s {way} the broker's: ETA and countdown tasks "
        f"will run {abs(skew):.1f} s {'early' if skew > 0 else 'late'} on this worker, and "
        "ETAs this host publishes are off by as much (visibility timeouts are not affected: "
        "they use the broker's clock). Synchronise the clocks (NTP)."
    )


def run_checks(app: Any, local_time: Callable[[], float]) -> None:
    """Every startup check for a worker of ``app``. Raises only ``SecurityError`` (S14)."""
    from tq.transport.connection import mask_url

    conf = app.conf
    check_privileges(app.accept_content)
    transport = app.transport
    for what, url, options in (
        ("broker", conf.broker_url, app._transport_options()),
        ("result backend", conf.result_backend, conf.result_backend_transport_options),
    ):
        if what != "broker" and url == conf.broker_url:
            continue  # one server, one warning
        text = exposure_warning(url, options, what) if url else None
        if text:
            logger.warning(text)
    targets: list[tuple[str, str, Any]] = [("broker", mask_url(conf.broker_url), transport.client)]
    backend = app.backend
    if backend is not None and conf.result_backend != conf.broker_url:
        client = getattr(backend, "client", None)
        if client is not None:
            targets.append(("result backend", mask_url(conf.result_backend), client))
    try:
        check_eviction(targets)
    except Exception as exc:  # a check never stops a worker
        logger.debug("eviction check failed: %s", exc)
    try:
        text = clock_skew(local_time(), transport.server_time())
    except Exception as exc:
        logger.debug("clock check failed: %s", exc)
        text = None
    if text:
        logger.warning(text)
