"""Faults against real servers: killed connections, restarts, frozen peers, bad credentials,
servers that hang up, TLS."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
import trustme

from pulse_trio import EmbeddedServer, RedisUnavailableError
from pulse_trio._embedded import free_port
from pulse_trio._redis import Client, ConnectionLostError, ResponseError, Resubscribed, open_client
from pulse_trio._redis._client import Standalone
from pulse_trio.testing import FaultProxy

pytestmark = pytest.mark.anyio


def _node(client: Client) -> Any:
    topology = client._topology
    assert isinstance(topology, Standalone)
    return topology.node


async def _until(condition: Any, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not await condition():
            await anyio.sleep(0.01)


async def test_connection_killed_mid_pipeline(
    rclient: Client, server_url: str, unique: str
) -> None:
    """Writes in flight fail with ConnectionLostError or succeed; reads are retried; the
    client reconnects; no acknowledged write is lost."""
    node = _node(rclient)
    mux = await node.multiplexed()
    counter = f"{unique}:n"
    await rclient.execute("SET", f"{unique}:r", "read-me")
    ok_incr = 0
    failed_written = 0
    failed_unwritten = 0
    reads = 0
    stop = anyio.Event()

    async def writer() -> None:
        nonlocal ok_incr, failed_written, failed_unwritten
        while not stop.is_set():
            try:
                await rclient.execute("INCR", counter)
                ok_incr += 1
            except ConnectionLostError as exc:
                if exc.written:
                    failed_written += 1
                else:
                    failed_unwritten += 1

    async def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            assert await rclient.execute("GET", f"{unique}:r") == b"read-me"  # retried
            reads += 1

    async with open_client(server_url) as killer, anyio.create_task_group() as tg:
        for _ in range(16):
            tg.start_soon(writer)
            tg.start_soon(reader)
        killed = []
        # Kill until a kill catches requests in flight (nearly always the first one).
        for attempt in range(5):
            with anyio.fail_after(10):
                while ok_incr < 200 * (attempt + 1):
                    await anyio.sleep(0.001)
            victim = await node.multiplexed()
            assert await killer.execute("CLIENT", "KILL", "ID", victim.client_id) == 1
            killed.append(victim)
            with anyio.fail_after(10):
                while node.connects < attempt + 2:
                    await anyio.sleep(0.001)
            if failed_written:
                break
        stop.set()
    assert mux is killed[0]
    assert all(victim.closed for victim in killed)
    assert failed_written > 0, "no kill hit a request in flight"
    assert reads > 0
    value = int(await rclient.execute("GET", counter))
    assert ok_incr <= value <= ok_incr + failed_written
    assert await rclient.execute("PING") == b"PONG"


async def test_server_restart_and_outage(own_server: EmbeddedServer, unique: str) -> None:
    async with open_client(own_server.url, connect_timeout=1.0) as client:
        node = _node(client)
        await client.execute("SET", unique, "kept")
        await own_server.restart()
        assert await client.execute("GET", unique) == b"kept"  # reconnected on demand
        assert node.connects == 2
        await own_server.stop()
        with anyio.fail_after(5), pytest.raises(RedisUnavailableError):
            await client.execute("PING")
        with anyio.fail_after(5), pytest.raises(RedisUnavailableError):
            await client.execute("PING")  # again, after a backoff
        # Callers that queue up while an attempt fails fail with it: one attempt for all.
        attempts = node._attempts
        failures = 0

        async def call() -> None:
            nonlocal failures
            with pytest.raises(RedisUnavailableError):
                await client.execute("PING")
            failures += 1

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(call)
        assert failures == 20
        assert node._attempts - attempts == 1
        with anyio.fail_after(5), pytest.raises(RedisUnavailableError):
            async with client.subscribe("c"):
                pass
        with anyio.fail_after(5), pytest.raises(RedisUnavailableError):
            async with client.blocking():
                pass
        await own_server.start()

        async def pings() -> bool:
            try:
                return bool(await client.execute("PING") == b"PONG")
            except RedisUnavailableError:
                return False

        await _until(pings)


async def _freeze_all(proxy: Any) -> None:
    for link in proxy.links:
        link.subscriber = True
    assert proxy.freeze_subscribers() >= 1


async def test_frozen_server_fails_requests_and_is_replaced(server_url: str, unique: str) -> None:
    port = int(server_url.rsplit(":", 1)[1])
    async with (
        FaultProxy(port) as proxy,
        open_client(proxy.url, command_timeout=0.5, health_check_interval=60) as client,
    ):
        node = _node(client)
        assert await client.execute("SET", unique, 1) == b"OK"
        await _freeze_all(proxy)
        with anyio.fail_after(5), pytest.raises(ConnectionLostError, match="no reply"):
            await client.execute("INCR", unique)
        assert await client.execute("GET", unique) in (b"1", b"2")  # a new connection
        assert node.connects == 2


async def test_idle_half_open_connection_is_detected_by_ping(server_url: str) -> None:
    port = int(server_url.rsplit(":", 1)[1])
    async with (
        FaultProxy(port) as proxy,
        open_client(proxy.url, command_timeout=0.3, health_check_interval=0.2) as client,
    ):
        mux = await _node(client).multiplexed()
        await _freeze_all(proxy)

        async def closed() -> bool:
            return bool(mux.closed)

        await _until(closed)  # nobody called: the watchdog's PING got no answer
        assert await client.execute("PING") == b"PONG"


async def test_half_open_subscription_is_replaced(server_url: str, unique: str) -> None:
    port = int(server_url.rsplit(":", 1)[1])
    async with (
        FaultProxy(port) as proxy,
        open_client(proxy.url, command_timeout=0.3, health_check_interval=60) as client,
        client.subscribe(f"{unique}:c") as sub,
    ):
        assert proxy.freeze_subscribers() == 1
        with anyio.fail_after(5), pytest.raises(RedisUnavailableError, match="PING"):
            await sub.ping()
        with anyio.fail_after(5):
            assert await sub.__anext__() == Resubscribed(1)
        await client.execute("PUBLISH", f"{unique}:c", "hello")
        with anyio.fail_after(5):
            item = await sub.__anext__()
        assert item.data == b"hello"  # type: ignore[union-attr]


async def test_killed_blocking_connection_is_not_reused(rclient: Client, unique: str) -> None:
    async with rclient.blocking() as conn:
        client_id = conn.client_id
        assert client_id is not None
        async with anyio.create_task_group() as tg:

            async def kill_when_blocked() -> None:
                async def blocked() -> bool:
                    info = await rclient.execute("CLIENT", "LIST", "ID", client_id)
                    return b" flags=b " in info

                await _until(blocked)
                await rclient.execute("CLIENT", "KILL", "ID", client_id)

            tg.start_soon(kill_when_blocked)
            with pytest.raises(ConnectionLostError):
                await conn.execute("XREAD", "BLOCK", 0, "STREAMS", f"{unique}:s", "$")
        assert conn.closed
    async with rclient.blocking() as other:
        assert other is not conn
        assert await other.execute("PING") == b"PONG"


async def test_acl_user_and_wrong_password(rclient: Client, server_url: str, unique: str) -> None:
    user = f"{unique}-user"
    await rclient.execute("ACL", "SETUSER", user, "on", ">right-pw", "~*", "+@all", "resetchannels")
    try:
        host = server_url.removeprefix("redis://")
        async with open_client(f"redis://{user}:right-pw@{host}") as client:
            assert await client.execute("ACL", "WHOAMI") == user.encode()
        with pytest.raises(ResponseError) as info:
            async with open_client(f"redis://{user}:wrong@{host}"):
                pass
        assert info.value.code == "WRONGPASS"
        async with open_client(f"redis://{user}:right-pw@{host}") as client:
            with pytest.raises(ResponseError) as refused:
                async with client.subscribe(f"{unique}:no-channel-permission"):
                    pass
            assert refused.value.code == "NOPERM"
    finally:
        await rclient.execute("ACL", "DELUSER", user)


@pytest.fixture
async def hang_up_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP server that reads the client's first bytes, then closes the connection."""
    received: list[bytes] = []

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            received.append(await stream.receive())

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield port, received
        tg.cancel_scope.cancel()


async def test_server_closing_after_the_greeting(hang_up_server: tuple[int, list[bytes]]) -> None:
    port, received = hang_up_server
    with anyio.fail_after(5), pytest.raises(RedisUnavailableError):
        async with open_client(f"redis://127.0.0.1:{port}"):
            pass
    assert received[0].startswith(b"*2\r\n$5\r\nHELLO\r\n")


async def test_silent_server_times_out_the_handshake() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        with anyio.fail_after(5), pytest.raises(RedisUnavailableError, match="handshake"):
            async with open_client(f"redis://127.0.0.1:{port}", connect_timeout=0.3):
                pass
        tg.cancel_scope.cancel()


async def test_tls_with_certificates_made_here(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    tls_port = free_port()
    extra = ["--tls-port", str(tls_port), "--tls-cert-file", str(cert_file)]
    extra += ["--tls-key-file", str(key_file), "--tls-ca-cert-file", str(ca_file)]
    extra += ["--tls-auth-clients", "no"]
    async with EmbeddedServer(extra_args=extra):
        context = ssl.create_default_context()
        ca.configure_trust(context)
        async with open_client(f"rediss://localhost:{tls_port}", ssl_context=context) as client:
            assert await client.execute("PING") == b"PONG"
            topology = client._topology
            assert isinstance(topology, Standalone)
            assert (await topology.node.multiplexed())._io is None  # no fast path under TLS
            results = []

            async def echo(i: int) -> None:
                results.append(await client.execute("ECHO", i))

            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(echo, i)
            assert sorted(results) == sorted(str(i).encode() for i in range(50))
            async with client.blocking() as conn:
                assert await conn.execute("PING") == b"PONG"
        untrusting = ssl.create_default_context()
        with pytest.raises(RedisUnavailableError):
            async with open_client(f"rediss://localhost:{tls_port}", ssl_context=untrusting):
                pass


async def test_frozen_blocking_read_times_out_and_is_discarded(
    server_url: str, unique: str
) -> None:
    port = int(server_url.rsplit(":", 1)[1])
    async with (
        FaultProxy(port) as proxy,
        open_client(proxy.url, command_timeout=0.3, health_check_interval=60) as client,
    ):
        async with client.blocking() as conn:
            assert await conn.execute("PING") == b"PONG"
            for link in proxy.links:
                link.subscriber = True
            proxy.freeze_subscribers()  # every connection so far, this one included
            with anyio.fail_after(5), pytest.raises(RedisUnavailableError, match="within"):
                await conn.execute("XREAD", "BLOCK", 100, "STREAMS", f"{unique}:s", "$")
            assert conn.closed  # timed out: never lent again
        async with client.blocking() as fresh:
            assert fresh is not conn
            assert await fresh.execute("PING") == b"PONG"
