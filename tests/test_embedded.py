"""The embedded server and ``connect``."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import pulse_trio
import pulse_trio.testing
from pulse_trio.testing import EmbeddedCluster, EmbeddedServer

pytestmark = pytest.mark.anyio


async def test_embedded_yields_a_working_url_and_cleans_up() -> None:
    async with pulse_trio.embedded() as url, pulse_trio.connect(url) as client:
        await client.execute("SET", "k", "v")
        assert await client.execute("GET", "k") == b"v"
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(OSError, match=r"(?i)connect"):
        await anyio.connect_tcp("127.0.0.1", port)


async def test_server_stops_and_directory_is_removed_on_cancellation() -> None:
    with anyio.CancelScope() as scope:
        async with EmbeddedServer() as server:
            directory = server.directory
            assert directory.exists()
            scope.cancel()
            await anyio.sleep(10)
    assert not server.running
    assert not directory.exists()


async def test_restart_keeps_data_with_appendonly() -> None:
    async with EmbeddedServer(appendonly=True) as server:
        async with pulse_trio.connect(server.url) as client:
            await client.execute("SET", "k", "v")
        await server.restart()
        async with pulse_trio.connect(server.url) as client:
            assert await client.execute("GET", "k") == b"v"


async def test_connect_rejects_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="unsupported URL scheme 'http'"):
        async with pulse_trio.connect("http://localhost"):
            pass


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"masters": 0}, "masters=0"),
        ({"replicas": -1}, "replicas=-1"),
        ({"node_timeout": 0.0}, "node_timeout=0.0"),
    ],
)
async def test_cluster_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EmbeddedCluster(**kwargs)


async def test_embedded_rejects_replicas_without_cluster() -> None:
    with pytest.raises(ValueError, match="replicas=1: replicas need cluster=True"):
        async with pulse_trio.embedded(replicas=1):
            pass


async def test_embedded_cluster_has_no_appendonly_option() -> None:
    with pytest.raises(ValueError, match="appendonly=True: only a standalone"):
        async with pulse_trio.embedded(cluster=True, appendonly=True):
            pass


def test_cluster_url_needs_a_running_cluster() -> None:
    with pytest.raises(pulse_trio.testing.EmbeddedServerError, match="not running"):
        _ = EmbeddedCluster().url
