"""Shared fixtures: real servers, entered clients, both AnyIO backends.

A session-scoped server is started once (``redis-server`` on PATH, else the embedded
Valkey); each test gets a freshly flushed client. Tests that restart or kill a server use
the function-scoped ``own_server`` fixture instead.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import urlsplit

import anyio
import coredis
import pytest
from coredis.connection import TCPLocation

import pulse_trio
from pulse_trio import EmbeddedServer

BACKENDS = [
    pytest.param("trio", id="trio"),
    pytest.param(("asyncio", {"debug": True}), id="asyncio"),
]


@pytest.fixture(params=BACKENDS, scope="session")
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Every async test runs on Trio and on asyncio."""
    return request.param


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of one server shared by the whole session (started in a helper thread's loop)."""
    with anyio.from_thread.start_blocking_portal("trio") as portal:
        server = EmbeddedServer()
        portal.call(server.__aenter__)
        try:
            yield server.url
        finally:
            portal.call(server.__aexit__, None, None, None)


@pytest.fixture
async def client(server_url: str) -> AsyncIterator[coredis.Redis[bytes]]:
    """An entered client on the shared server, after FLUSHALL."""
    async with pulse_trio.connect(server_url) as c:
        assert isinstance(c, coredis.Redis)
        await c.flushall()
        yield c


@pytest.fixture
async def own_server() -> AsyncIterator[EmbeddedServer]:
    """A server of this test's own (AOF on), which the test may restart or kill."""
    async with EmbeddedServer(appendonly=True) as server:
        yield server


@pytest.fixture
def unique() -> str:
    """A short unique name prefix for this test."""
    return "t" + uuid.uuid4().hex[:10]


# --- Redis Cluster -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    """``redis+cluster://`` URL of one 3-master cluster shared by the session (helper thread)."""
    with anyio.from_thread.start_blocking_portal("trio") as portal:
        cluster = pulse_trio.EmbeddedCluster(masters=3)
        portal.call(cluster.__aenter__)
        try:
            yield cluster.url
        finally:
            portal.call(cluster.__aexit__, None, None, None)


@contextlib.asynccontextmanager
async def _connect_cluster(url: str) -> AsyncIterator[coredis.RedisCluster[bytes]]:
    """``pulse_trio.connect(url)`` for a cluster URL, with two coredis 6.9 warts worked around.

    1. ``RedisCluster.from_url`` builds its seed node with a deprecated type and warns (an
       error under ``filterwarnings=error``) unless ``startup_nodes`` is given.
    2. The cluster layout's error stream is never closed, so a ResourceWarning fires whenever
       the client is garbage-collected (in whatever test runs then): close it after exit.
    """
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    seed = [TCPLocation(parts.hostname, parts.port)]
    async with pulse_trio.connect(url, startup_nodes=seed) as c:
        assert isinstance(c, coredis.RedisCluster)
        cluster_client = c
        yield c
    for stream in cluster_client.connection_pool.cluster_layout._error_stream:
        stream.close()


@pytest.fixture
def connect_cluster() -> Callable[[str], AbstractAsyncContextManager[coredis.RedisCluster[bytes]]]:
    """``connect_cluster(url)``: an async context manager yielding an entered RedisCluster."""
    return _connect_cluster


@pytest.fixture
async def cluster_client(cluster_url: str) -> AsyncIterator[coredis.RedisCluster[bytes]]:
    """An entered ``coredis.RedisCluster`` on the shared cluster, after FLUSHALL on every master."""
    async with _connect_cluster(cluster_url) as c:
        await c.flushall()
        yield c


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    """Collect garbage after each test so resource warnings name the test that leaked."""
    yield
    import gc

    gc.collect()
