"""``pulse_trio.connect``: a ready :class:`pulse_trio.Client` from a URL, and ``url_of``, the
URL of a coredis client's settings (the documented way in for code that holds one)."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

from ._redis import Client, open_client
from ._redis._settings import (
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    HEALTH_CHECK_INTERVAL,
    MAX_BLOCKING_CONNECTIONS,
    MAX_PENDING,
)


@contextlib.asynccontextmanager
async def connect(
    url: str,
    *,
    client_name: str | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    command_timeout: float = COMMAND_TIMEOUT,
    health_check_interval: float = HEALTH_CHECK_INTERVAL,
    max_blocking_connections: int = MAX_BLOCKING_CONNECTIONS,
    max_pending: int = MAX_PENDING,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Client]:
    """Connect to Redis and yield a ready :class:`pulse_trio.Client`; close it on exit.

    Schemes: ``redis://`` (TCP), ``rediss://`` (TLS), ``unix://`` (a socket path),
    ``redis+cluster://`` / ``rediss+cluster://`` for a Redis Cluster (one or more seed
    nodes, comma-separated), and ``redis+sentinel://host:port[,host:port]/service`` for a
    primary found (and followed through failovers) by Sentinel. User, password (ACL) and
    database go in the URL the usual way: ``redis://user:secret@host:6379/0``.

    Connections held, per server (per primary on a cluster): one multiplexed connection that
    every task's ordinary commands share (pipelined automatically); one pooled dedicated
    connection per blocking read in progress (each reader, each stream of a sink, each pool
    node), up to ``max_blocking_connections``; one per pub/sub subscription (each map).

    Args:
        url: The server URL.
        client_name: ``CLIENT SETNAME`` of every connection (default: the URL's
            ``?client_name=``, else none).
        connect_timeout: Bound on connecting plus the handshake, seconds.
        command_timeout: A request unanswered this long (blocking reads: this long past their
            ``BLOCK``) fails with :class:`pulse_trio.RedisUnavailableError` and its connection
            is replaced.
        health_check_interval: Idle connections are PINGed this often, seconds.
        max_blocking_connections: Dedicated connections per server for blocking reads; more
            concurrent blocking reads wait for one.
        max_pending: Outstanding requests per multiplexed connection before callers wait
            (back-pressure).
        ssl_context: For ``rediss``: the TLS context (default: the system's trust store).

    Raises:
        ValueError: The URL is not understood, or an option is out of range (the message
            names it; checked before any I/O).
        TypeError: An option has the wrong type (the message names it).
        RedisUnavailableError: No server could be reached.
        RedisCommandError: The server refused the handshake (wrong password, bad database).
    """
    async with open_client(
        url,
        client_name=client_name,
        connect_timeout=connect_timeout,
        command_timeout=command_timeout,
        health_check_interval=health_check_interval,
        max_blocking_connections=max_blocking_connections,
        max_pending=max_pending,
        ssl_context=ssl_context,
    ) as client:
        yield client


def url_of(coredis_client: Any) -> str:
    """The URL of a coredis client's connection settings, for :func:`connect`.

    ``pulse_trio.connect(pulse_trio.url_of(existing))`` opens a pulse-trio client to the
    same server (or cluster) with the same credentials, database, TLS and client name. It
    reads the settings only: the coredis client is neither used nor closed, and coredis need
    not be installed for pulse-trio. TLS settings beyond ``rediss`` (a custom CA, client
    certificates) are not carried over: pass ``ssl_context`` to :func:`connect`.

    Raises:
        TypeError: ``coredis_client`` has no coredis connection pool to read.
    """
    pool = getattr(coredis_client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if pool is None or not isinstance(kwargs, dict):
        raise TypeError(
            "url_of() reads the settings of a coredis.Redis or coredis.RedisCluster, "
            f"not of {type(coredis_client).__name__}"
        )
    username = kwargs.get("username")
    password = kwargs.get("password")
    auth = ""
    if username or password:
        auth = quote(str(username or ""), safe="")
        if password:
            auth += ":" + quote(str(password), safe="")
        auth += "@"
    tls = kwargs.get("ssl_context") is not None
    query = {"client_name": str(kwargs["client_name"])} if kwargs.get("client_name") else {}
    suffix = "?" + urlencode(query) if query else ""
    startup = getattr(pool, "startup_nodes", None)
    if startup:  # a cluster: every seed node it was given
        hosts = ",".join(f"{_host(str(n.host))}:{n.port}" for n in startup)
        scheme = "rediss+cluster" if tls else "redis+cluster"
        return f"{scheme}://{auth}{hosts}{suffix}"
    db = int(kwargs.get("db") or 0)
    location = getattr(pool, "location", None)
    path = getattr(location, "path", None)
    if path:
        query["db"] = str(db)
        return f"unix://{auth}{path}?{urlencode(query)}"
    host = getattr(location, "host", None) or "localhost"
    port = getattr(location, "port", None) or 6379
    scheme = "rediss" if tls else "redis"
    return f"{scheme}://{auth}{_host(str(host))}:{port}/{db}{suffix}"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
