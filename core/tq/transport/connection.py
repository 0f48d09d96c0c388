"""redis-py clients built from broker / backend URLs and transport options.

URLs: ``redis://[user:pass@]host[:port][/db]``, ``rediss://`` (TLS; certificates verified
unless ``ssl_cert_reqs`` says otherwise, with a warning), ``unix:///path?db=N``,
``sentinel://host:port[;sentinel://host2:port]/db`` with the ``master_name`` option.

Transport options read here (``broker_transport_options``):
    socket_timeout (5 s), socket_connect_timeout (3 s), health_check_interval (25 s),
    max_connections (None), master_name (sentinel), sentinel_kwargs, plus ``ssl_*`` keys
    taken from ``broker_use_ssl``.
Imports only redis-py and tq.exceptions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from tq.exceptions import ConfigurationError

logger = logging.getLogger(__name__)

#: Seconds a command may wait for the server before the connection counts as lost.
DEFAULT_SOCKET_TIMEOUT = 5.0
#: Seconds to establish a connection.
DEFAULT_CONNECT_TIMEOUT = 3.0
#: Reconnect backoff: first wait and cap, in seconds.
BACKOFF_BASE = 0.1
BACKOFF_CAP = 5.0

_CERT_REQS = {
    "required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
    "cert_required": ssl.CERT_REQUIRED,
    "cert_optional": ssl.CERT_OPTIONAL,
    "cert_none": ssl.CERT_NONE,
}


def mask_url(url: str | None) -> str:
    """The URL with its password replaced by ``**`` (RELIABILITY.md S5)."""
    if not url:
        return ""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1**@", url)


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """What a URL says about the server: kept for banners, stats and fanout channel names."""

    url: str
    db: int
    host: str
    port: int | None
    scheme: str

    @property
    def masked(self) -> str:
        return mask_url(self.url)


def parse_url(url: str) -> ClientSpec:
    """Read the scheme, host, port and db number of a broker URL.

    Raises:
        ConfigurationError: unsupported scheme or a db that is not a number.
    """
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in ("redis", "rediss", "unix", "sentinel", "valkey", "valkeys"):
        raise ConfigurationError(
            f"unsupported broker URL scheme {scheme!r} in {mask_url(url)}: "
            "use redis://, rediss://, unix:// or sentinel://"
        )
    db = 0
    if scheme == "unix":
        query = parse_qs(parts.query)
        raw_db = (query.get("db") or query.get("virtual_host") or ["0"])[0]
    else:
        raw_db = parts.path.strip("/").split(";")[0] or "0"
    try:
        db = int(raw_db)
    except ValueError:
        raise ConfigurationError(
            f"database in {mask_url(url)} must be a number, got {raw_db!r}"
        ) from None
    host = parts.hostname or ("localhost" if scheme != "unix" else parts.path)
    return ClientSpec(url=url, db=db, host=host, port=parts.port, scheme=scheme)


def _ssl_kwargs(url: str, options: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    reqs = options.get("ssl_cert_reqs")
    query = parse_qs(urlsplit(url).query)
    if reqs is None and "ssl_cert_reqs" in query:
        reqs = query["ssl_cert_reqs"][0]
    if isinstance(reqs, str):
        try:
            reqs = _CERT_REQS[reqs.lower()]
        except KeyError:
            raise ConfigurationError(f"unknown ssl_cert_reqs {reqs!r}") from None
    if reqs is None:
        reqs = ssl.CERT_REQUIRED
    if reqs == ssl.CERT_NONE:
        logger.warning(
            "TLS certificate verification is OFF (ssl_cert_reqs=CERT_NONE) for %s: "
            "anyone on the path can read and change messages",
            mask_url(url),
        )
    out["ssl_cert_reqs"] = reqs
    for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"):
        if key in options:
            out[key] = options[key]
    return out


def make_client(
    url: str,
    options: dict[str, Any] | None = None,
    *,
    blocking_timeout: float | None = None,
) -> redis.Redis:
    """A redis-py client for ``url`` with retries and timeouts from ``options``.

    Args:
        url: the broker or backend URL.
        options: transport options (see the module docstring).
        blocking_timeout: for a client that issues blocking commands, the longest block in
            seconds; the socket timeout is raised above it.
    """
    opts = dict(options or {})
    spec = parse_url(url)
    socket_timeout = float(opts.get("socket_timeout") or DEFAULT_SOCKET_TIMEOUT)
    if blocking_timeout is not None:
        socket_timeout = max(socket_timeout, blocking_timeout + 5.0)
    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": float(
            opts.get("socket_connect_timeout") or DEFAULT_CONNECT_TIMEOUT
        ),
        "health_check_interval": int(opts.get("health_check_interval", 25)),
        # Retry only when the connection failed, never after a timeout: a command that timed
        # out may still have run (a frozen broker), and sending it again would publish twice.
        "retry": Retry(
            ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE),
            3,
            supported_errors=(redis.ConnectionError,),
        ),
        "retry_on_timeout": False,
        "client_name": opts.get("client_name"),
    }
    if opts.get("max_connections"):
        kwargs["max_connections"] = int(opts["max_connections"])
    if spec.scheme in ("rediss", "valkeys"):
        kwargs.update(_ssl_kwargs(url, opts))
    if spec.scheme == "sentinel":
        return _sentinel_client(url, spec, opts, kwargs)
    client_url = url.replace("valkey://", "redis://", 1).replace("valkeys://", "rediss://", 1)
    return redis.Redis.from_url(client_url, **{k: v for k, v in kwargs.items() if v is not None})


def _sentinel_client(
    url: str, spec: ClientSpec, opts: dict[str, Any], kwargs: dict[str, Any]
) -> redis.Redis:
    from redis.sentinel import Sentinel

    master = opts.get("master_name")
    if not master:
        raise ConfigurationError(
            "a sentinel:// URL needs the 'master_name' transport option "
            "(broker_transport_options={'master_name': 'mymaster'})"
        )
    hosts: list[tuple[str, int]] = []
    password = None
    username = None
    for part in url.split(";"):
        p = urlsplit(part.strip())
        if p.hostname:
            hosts.append((p.hostname, p.port or 26379))
        password = password or p.password
        username = username or p.username
    sentinel = Sentinel(
        hosts,
        sentinel_kwargs=opts.get("sentinel_kwargs") or {},
        socket_timeout=kwargs["socket_timeout"],
    )
    client: redis.Redis = sentinel.master_for(
        master,
        db=spec.db,
        password=password,
        username=username,
        socket_timeout=kwargs["socket_timeout"],
        socket_connect_timeout=kwargs["socket_connect_timeout"],
        retry=kwargs["retry"],
    )
    return client


def is_loopback(url: str) -> bool:
    """True when the URL points at this machine (used for exposure warnings)."""
    spec = parse_url(url)
    return spec.scheme == "unix" or spec.host in ("localhost", "127.0.0.1", "::1")


class HeldConnection:
    """A connection of ``client``'s pool kept by the calling thread (made again after a fork
    or an error), to send batches of commands on the hot path without redis-py's per-call
    machinery (pool checkout, retry wrapper, pipeline objects, response callbacks): about a
    third of the client-side CPU. It is still redis-py's connection, so AUTH, TLS, SELECT
    and sentinel discovery happen as usual.

    Args:
        client: a function returning the client whose pool lends the connection.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._local = threading.local()

    def run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write and read every reply. An error reply comes back
        as the ``redis.ResponseError`` in its place; a broken connection raises (and the
        connection is dropped, since it may hold half a reply)."""
        retry = self._client().get_retry()
        if retry is None:
            return self._run_once(commands)
        # The client's own policy: retried only when the connection failed, never after
        # a timeout (see make_client).
        return list(retry.call_with_retry(lambda: self._run_once(commands), self._failed))

    def _failed(self, error: BaseException) -> None:
        self.close()

    def _run_once(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        conn = self._connection()
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
            return replies
        except BaseException:
            self.close()
            raise

    def _connection(self) -> Any:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            conn = local.conn = self._client().connection_pool.get_connection()
            local.pid = os.getpid()
        return conn

    def close(self) -> None:
        """Give this thread's connection back, disconnected."""
        local = self._local
        conn, local.conn = getattr(local, "conn", None), None
        if conn is None or local.pid != os.getpid():
            return
        with contextlib.suppress(Exception):  # closing must not raise on a broken pool
            conn.disconnect()
            self._client().connection_pool.release(conn)
