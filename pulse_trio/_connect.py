"""``pulse_trio.connect``: a ready coredis client from a URL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import coredis
from coredis.connection import TCPLocation

from ._coredis_compat import SlotSafeClusterConnectionPool, SlotSafeConnectionPool

#: Connections each client may open (coredis's own default is 64). Blocking reads and
#: subscriptions each hold one for as long as they run; see the README for the arithmetic.
DEFAULT_MAX_CONNECTIONS = 64
_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_SCHEMES = {"redis", "rediss", "unix", *_CLUSTER_SCHEMES}
#: Options of coredis's client (the rest of ``**kwargs`` configures its connection pool).
_CLIENT_OPTIONS = {"verify_version", "noreply", "retry_policy", "type_adapter"}


@contextlib.asynccontextmanager
async def connect(
    url: str,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    **kwargs: Any,
) -> AsyncIterator[coredis.Redis[bytes] | coredis.RedisCluster[bytes]]:
    """Open a coredis client for ``url`` and yield it, entered and ready.

    Schemes: ``redis://`` (TCP), ``rediss://`` (TLS), ``unix://`` (a socket path), and
    ``redis+cluster://`` / ``rediss+cluster://`` for a Redis Cluster (any one node as seed).
    User, password (ACL) and database go in the URL the usual way:
    ``redis://user:secret@host:6379/0``. Responses are not decoded (``bytes``), as pulse-trio
    requires. The client's pool gives back the slot of a connection lost while leased
    (coredis 6.9 does not; see ``pulse_trio._coredis_compat``).

    Args:
        url: The server URL.
        max_connections: Connection pool size. Each map, reader and sink holds one dedicated
            connection while it runs (sinks: one per stream plus their maps').
        **kwargs: Options of coredis's client (``retry_policy``, ``verify_version``, ...)
            and of its connection pool (``stream_timeout``, ``connect_timeout``, ...).

    Yields:
        A ``coredis.Redis`` or, for cluster URLs, a ``coredis.RedisCluster``.

    Raises:
        ValueError: The scheme is not one of the above.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(
            f"unsupported URL scheme {parts.scheme!r} in {url!r}: use one of "
            + ", ".join(sorted(s + "://" for s in _SCHEMES))
        )
    if scheme in _CLUSTER_SCHEMES:
        plain = urlunsplit(parts._replace(scheme=_CLUSTER_SCHEMES[scheme]))
        if parts.hostname and "startup_nodes" not in kwargs:
            # coredis 6.9's from_url builds its seed node with a deprecated type (and warns)
            # unless the seed is given explicitly.
            kwargs["startup_nodes"] = [TCPLocation(parts.hostname, parts.port or 6379)]
        client_options = {k: kwargs.pop(k) for k in list(kwargs) if k in _CLIENT_OPTIONS}
        cluster_pool = SlotSafeClusterConnectionPool.from_url(
            plain, decode_responses=False, max_connections=max_connections, **kwargs
        )
        cluster = coredis.RedisCluster(
            decode_responses=False, connection_pool=cluster_pool, **client_options
        )
        try:
            async with cluster:
                yield cluster
        finally:
            # coredis 6.9 never closes the cluster layout's error streams (ResourceWarning
            # when the client is collected).
            layout = getattr(cluster.connection_pool, "cluster_layout", None)
            for stream in getattr(layout, "_error_stream", ()):
                stream.close()
        return
    client_options = {k: kwargs.pop(k) for k in list(kwargs) if k in _CLIENT_OPTIONS}
    pool = SlotSafeConnectionPool.from_url(
        url, decode_responses=False, max_connections=max_connections, **kwargs
    )
    client = coredis.Redis(decode_responses=False, connection_pool=pool, **client_options)
    async with client:
        yield client
