"""The public fault injection of pulse_trio.testing: FaultProxy, pause/resume, kill helpers."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import pulse_trio
from pulse_trio import rmap
from pulse_trio.streaming import Stream
from pulse_trio.testing import (
    ConnectionKind,
    EmbeddedServer,
    EmbeddedServerError,
    FaultProxy,
    FaultProxyError,
    client_connections,
    kill_blocking,
    kill_connections,
    kill_multiplexed,
    kill_pubsub,
)

from .._util import wait_until, wait_until_async

pytestmark = pytest.mark.anyio

#: Quick failures: a frozen connection's request, and a new connection's handshake.
FAST: dict[str, Any] = {"command_timeout": 0.5, "connect_timeout": 0.5, "health_check_interval": 60}


async def test_proxy_forwards_then_freezes_and_heals(pulse_server: str, pulse_name: str) -> None:
    async with (
        FaultProxy(pulse_server) as proxy,
        pulse_trio.connect(proxy.url, **FAST) as client,
    ):
        assert await client.execute("SET", pulse_name, "1") == b"OK"
        proxy.freeze()
        with anyio.fail_after(5), pytest.raises(pulse_trio.RedisUnavailableError):
            await client.execute("GET", pulse_name)
        assert all(link.frozen for link in proxy.links)
        proxy.heal()
        with anyio.fail_after(5):
            assert await client.execute("GET", pulse_name) == b"1"


async def test_proxy_cut_closes_every_connection_and_clients_reconnect(
    pulse_server: str, pulse_name: str
) -> None:
    async with FaultProxy(pulse_server) as proxy, pulse_trio.connect(proxy.url) as client:
        await client.execute("SET", pulse_name, "1")
        assert proxy.cut() == 1
        await wait_until(lambda: not proxy.open_links, what="closed")
        with anyio.fail_after(5):
            assert await client.execute("GET", pulse_name) == b"1"  # a new connection
        assert len(proxy.links) == 2


async def test_proxy_refuses_new_connections(pulse_server: str) -> None:
    async with FaultProxy(pulse_server) as proxy:
        proxy.refuse()
        with pytest.raises(pulse_trio.RedisUnavailableError):
            async with pulse_trio.connect(proxy.url, connect_timeout=1):
                pass
        proxy.heal()
        async with pulse_trio.connect(proxy.url) as client:
            assert await client.execute("PING") == b"PONG"


async def test_proxy_delays_and_drops_one_direction(pulse_server: str, pulse_name: str) -> None:
    async with FaultProxy(pulse_server) as proxy, pulse_trio.connect(proxy.url, **FAST) as client:
        proxy.delay(0.2, "down")
        started = anyio.current_time()
        assert await client.execute("PING") == b"PONG"
        assert anyio.current_time() - started >= 0.2
        proxy.delay(0)
        proxy.drop("down")  # the request runs, its reply never comes back
        with anyio.fail_after(5), pytest.raises(pulse_trio.RedisUnavailableError):
            await client.execute("SET", pulse_name, "written")
        proxy.heal()
        with anyio.fail_after(5):
            assert await client.execute("GET", pulse_name) == b"written"


async def test_proxy_rejects_bad_targets_and_directions() -> None:
    with pytest.raises(ValueError, match="redis://"):
        FaultProxy("http://localhost:80")
    with pytest.raises(ValueError, match="port"):
        FaultProxy(70000)
    with pytest.raises(FaultProxyError):
        _ = FaultProxy(6379).url
    with pytest.raises(ValueError, match="direction"):
        FaultProxy(6379).drop("sideways")


async def test_paused_server_answers_nothing_until_resumed(
    pulse_killable_server: EmbeddedServer, pulse_name: str
) -> None:
    server = pulse_killable_server
    async with pulse_trio.connect(server.url, **FAST) as client:
        await client.execute("SET", pulse_name, "1")
        server.pause()
        assert server.paused
        assert "paused" in repr(server)
        with anyio.fail_after(5), pytest.raises(pulse_trio.RedisUnavailableError):
            await client.execute("GET", pulse_name)
        server.resume()
        assert not server.paused
        with anyio.fail_after(5):
            assert await client.execute("GET", pulse_name) == b"1"
        server.pause()  # a paused server still stops (SIGCONT, then SIGTERM)
    with anyio.fail_after(15):
        await server.stop()
    assert not server.running
    with pytest.raises(EmbeddedServerError, match="not running"):
        server.resume()


async def test_kill_connections_by_kind(pulse_client: pulse_trio.Client, pulse_name: str) -> None:
    stream = Stream(pulse_client, pulse_name)
    async with (
        stream.open_sink("s", block=5.0) as sink,
        rmap.join(pulse_client, pulse_name) as replica,
    ):
        await stream.add("e", b"")
        with anyio.fail_after(5):
            await sink.ack(await sink.__anext__())

        async def every_kind() -> bool:
            found = {
                kind
                for kind, entry in await client_connections(pulse_client)
                if entry.get("name") == pulse_name or entry["self"] == "1"
            }
            return found == set(ConnectionKind)

        await wait_until_async(every_kind, what="blocking, pub/sub and multiplexed connections")
        reconnects = replica.statistics().reconnects
        assert await kill_pubsub(pulse_client) >= 1
        await wait_until(lambda: replica.statistics().reconnects > reconnects, what="resubscribed")
        assert await kill_blocking(pulse_client) >= 1
        await _killed_and_reconnected(pulse_client)
        await stream.add("f", b"")  # every kind reconnects: the sink still receives events
        with anyio.fail_after(10):
            event = await sink.__anext__()
        assert event.event_name == "f"
        await replica.set_and_wait("k", "v")
        assert replica.get("k") == "v"


async def _killed_and_reconnected(client: pulse_trio.Client) -> None:
    """Kill the multiplexed connection; the client opens a new one (a request under way as
    the connection closes may fail: the next one reconnects)."""
    connects = client.statistics()[0].connects
    assert await kill_multiplexed(client) == 1
    with anyio.fail_after(5):
        while True:
            try:
                assert await client.execute("PING") == b"PONG"
            except pulse_trio.RedisUnavailableError:
                continue
            break
    assert client.statistics()[0].connects == connects + 1


async def test_kill_connections_needs_a_name_for_other_kinds(pulse_server: str) -> None:
    async with pulse_trio.connect(pulse_server) as anonymous:
        with pytest.raises(ValueError, match="client_name"):
            await kill_connections(anonymous, "pubsub")
        with pytest.raises(ValueError, match="other"):
            await kill_connections(anonymous, "other")
        assert await kill_connections(anonymous, "pubsub", every_client=True) >= 0
        await _killed_and_reconnected(anonymous)


async def test_fixtures_give_a_fresh_named_client_and_a_valid_name(
    pulse_client: pulse_trio.Client, pulse_name: str, pulse_proxy: FaultProxy
) -> None:
    assert pulse_client.settings.client_name == pulse_name
    assert await pulse_client.execute("CLIENT", "GETNAME") == pulse_name.encode()
    Stream(pulse_client, pulse_name)  # a valid name for every kind
    async with pulse_trio.connect(pulse_proxy.url) as via_proxy:
        assert await via_proxy.execute("PING") == b"PONG"
    assert pulse_proxy.links


@pytest.mark.cluster
async def test_cluster_fixtures_give_a_cluster_client(
    pulse_cluster: str, pulse_cluster_client: pulse_trio.Client, pulse_name: str
) -> None:
    assert pulse_cluster.startswith("redis+cluster://")
    assert pulse_cluster_client.is_cluster
    stream = Stream(pulse_cluster_client, pulse_name)
    assert await stream.add("e", b"")
    assert await kill_multiplexed(pulse_cluster_client) == 3  # one per master
