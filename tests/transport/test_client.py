"""The transport against a real server: commands, scripts, pipelining, cancellation."""

from __future__ import annotations

import random
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pulse_trio import ClosedError
from pulse_trio._redis import Client, ResponseError, Script, open_client
from pulse_trio._redis._client import Standalone

pytestmark = pytest.mark.anyio


def _node(client: Client) -> Any:
    topology = client._topology
    assert isinstance(topology, Standalone)
    return topology.node


async def test_replies_come_back_raw(rclient: Client, unique: str) -> None:
    assert await rclient.execute("PING") == b"PONG"
    assert await rclient.execute("SET", f"{unique}:s", b"\x00\xff") == b"OK"
    assert await rclient.execute("GET", f"{unique}:s") == b"\x00\xff"
    assert await rclient.execute("GET", f"{unique}:missing") is None
    assert await rclient.execute("HSET", f"{unique}:h", "a", 1, "b", 2.5) == 2
    assert await rclient.execute("HGETALL", f"{unique}:h") == {b"a": b"1", b"b": b"2.5"}
    assert await rclient.execute("INCRBYFLOAT", f"{unique}:f", 1.5) == b"1.5"
    assert await rclient.execute("ZADD", f"{unique}:z", 1, "m") == 1
    assert await rclient.execute("ZSCORE", f"{unique}:z", "m") == 1.0  # a RESP3 double


async def test_error_replies_raise_with_their_code(rclient: Client, unique: str) -> None:
    await rclient.execute("SET", f"{unique}:s", "text")
    with pytest.raises(ResponseError) as info:
        await rclient.execute("HGET", f"{unique}:s", "f")
    assert info.value.code == "WRONGTYPE"
    assert "WRONGTYPE" in info.value.message
    # the connection is still in step
    assert await rclient.execute("GET", f"{unique}:s") == b"text"


async def test_handshake_sets_name_and_database(server_url: str, unique: str) -> None:
    async with open_client(server_url + "/3", client_name=f"{unique}-name") as client:
        assert await client.execute("CLIENT", "GETNAME") == f"{unique}-name".encode()
        await client.execute("SET", unique, "in-db-3")
        info = await client.execute("CLIENT", "INFO")
        assert b" db=3 " in info
    async with open_client(server_url) as client:
        assert await client.execute("GET", unique) is None
        async with client.blocking() as conn:  # SELECT only on a connection of its own
            await conn.execute("SELECT", 3)
            assert await conn.execute("GET", unique) == b"in-db-3"
            await conn.execute("DEL", unique)


async def test_scripts_run_by_sha_and_survive_a_script_flush(rclient: Client, unique: str) -> None:
    script = Script.of("return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}")
    assert Script.of("return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}") is script
    key = f"{unique}:n"
    assert await rclient.execute_script(script, [key], ["x"]) == [key.encode(), b"x", 1]
    assert await rclient.execute("SCRIPT", "EXISTS", script.sha) == [1]
    await rclient.execute("SCRIPT", "FLUSH")
    assert await rclient.execute_script(script, [key], ["y"]) == [key.encode(), b"y", 2]
    assert await rclient.execute("SCRIPT", "EXISTS", script.sha) == [1]  # EVAL cached it
    with pytest.raises(ResponseError, match="boom"):
        await rclient.execute_script("return redis.error_reply('boom')")


async def test_concurrent_requests_share_writes(rclient: Client, unique: str) -> None:
    """Requests queued while a write is in flight leave together: fewer sends than requests."""
    mux = await _node(rclient).multiplexed()
    requests, writes = mux.requests, mux.writes
    results: dict[int, Any] = {}

    async def one(i: int) -> None:
        results[i] = await rclient.execute("ECHO", f"{unique}-{i}")

    async with anyio.create_task_group() as tg:
        for i in range(200):
            tg.start_soon(one, i)
    assert results == {i: f"{unique}-{i}".encode() for i in range(200)}
    assert mux.requests - requests == 200
    assert mux.writes - writes < 50, (mux.writes - writes, "requests were not batched")


async def test_outstanding_requests_are_bounded(server_url: str, unique: str) -> None:
    async with open_client(server_url, max_pending=4) as client:
        mux = await _node(client).multiplexed()
        most = 0
        done = anyio.Event()

        async def sample() -> None:
            nonlocal most
            while not done.is_set():
                most = max(most, mux.waiting)
                await anyio.lowlevel.checkpoint()

        async def one(i: int) -> None:
            assert await client.execute("ECHO", i) == str(i).encode()

        async with anyio.create_task_group() as tg:
            tg.start_soon(sample)
            async with anyio.create_task_group() as workers:
                for i in range(100):
                    workers.start_soon(one, i)
            done.set()
        assert 1 <= most <= 4


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    plan=st.lists(
        st.tuples(st.binary(max_size=64), st.none() | st.integers(0, 6)), min_size=1, max_size=40
    ),
    seed=st.integers(0, 2**32),
)
async def test_cancelled_callers_never_desynchronise_the_connection(
    rclient: Client, plan: list[tuple[bytes, int | None]], seed: int
) -> None:
    """Callers cancelled at random points: every other caller gets its own reply, and the
    same connection keeps serving (no reconnect)."""
    node = _node(rclient)
    mux = await node.multiplexed()
    connects = node.connects
    rng = random.Random(seed)
    got: dict[int, Any] = {}
    cancelled: set[int] = set()

    async def caller(i: int, payload: bytes, cancel_after: int | None) -> None:
        with anyio.CancelScope() as scope:
            if cancel_after is not None:

                async def canceller() -> None:
                    for _ in range(cancel_after):
                        await anyio.lowlevel.checkpoint()
                    scope.cancel()

                tg.start_soon(canceller)
            got[i] = await rclient.execute("ECHO", payload)
        if scope.cancelled_caught:
            cancelled.add(i)

    async with anyio.create_task_group() as tg:
        for i, (payload, cancel_after) in enumerate(plan):
            tg.start_soon(caller, i, payload, cancel_after)
            if rng.random() < 0.3:
                await anyio.lowlevel.checkpoint()
    for i, (payload, cancel_after) in enumerate(plan):
        if i in got:
            assert got[i] == payload
        else:
            assert i in cancelled
            assert cancel_after is not None
    marker = rng.randbytes(8)
    assert await rclient.execute("ECHO", marker) == marker
    assert node.connects == connects
    assert await node.multiplexed() is mux
    assert mux.waiting == 0


async def test_resp2_protocol(server_url: str, unique: str) -> None:
    async with open_client(server_url, protocol=2) as client:
        await client.execute("HSET", f"{unique}:h", "a", 1)
        assert await client.execute("HGETALL", f"{unique}:h") == [b"a", b"1"]  # no maps
        async with client.subscribe(f"{unique}:c") as sub:
            await sub.ping()  # RESP2 answers ["pong", ""] in subscribed mode
            await client.execute("PUBLISH", f"{unique}:c", "m")
            with anyio.fail_after(5):
                item = await sub.__anext__()
            assert item.data == b"m"  # type: ignore[union-attr]
        async with client.blocking() as conn:
            assert conn.client_id is not None  # from the RESP2 HELLO reply


async def test_execute_many_is_one_write_with_replies_in_order(
    rclient: Client, unique: str
) -> None:
    mux = await _node(rclient).multiplexed()
    writes = mux.writes
    commands: list[list[Any]] = [["SET", f"{unique}:{i}", i] for i in range(50)]
    commands += [["GET", f"{unique}:{i}"] for i in range(50)]
    replies = await rclient.execute_many(commands)
    assert mux.writes - writes == 1
    assert replies == [b"OK"] * 50 + [str(i).encode() for i in range(50)]
    mixed = await rclient.execute_many(
        [["INCR", f"{unique}:0"], ["HGET", f"{unique}:0", "f"], ["INCR", f"{unique}:0"]],
        raise_on_error=False,
    )
    assert mixed[0] == 1
    assert isinstance(mixed[1], ResponseError)
    assert mixed[1].code == "WRONGTYPE"
    assert mixed[2] == 2  # the error did not stop the rest
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await rclient.execute_many([["HGET", f"{unique}:0", "f"], ["PING"]])
    assert await rclient.execute_many([]) == []


@pytest.mark.parametrize(
    "command",
    [
        ("SUBSCRIBE", "c"),
        (b"multi",),
        ("SELECT", 1),
        ("BLPOP", "l", 0),
        ("XREAD", "BLOCK", 0, "STREAMS", "s", "$"),
        (b"XREADGROUP", b"GROUP", b"g", b"c", b"block", 5, b"STREAMS", b"s", b">"),
    ],
)
async def test_connection_blocking_commands_are_refused(rclient: Client, command: Any) -> None:
    with pytest.raises(ValueError, match="dedicated connection"):
        await rclient.execute(*command)
    with pytest.raises(ValueError, match="dedicated connection"):
        await rclient.execute_many([("PING",), command])
    assert await rclient.execute("PING") == b"PONG"


async def test_large_values_alongside_small_commands(rclient: Client, unique: str) -> None:
    """A request bigger than the socket buffer is written in parts (the first part by the
    caller on Trio, the rest by the writer task); replies stay matched."""
    big = bytes(range(256)) * (8 * 4096)  # 8 MiB
    results: dict[str, Any] = {}

    async def small(i: int) -> None:
        results[f"echo{i}"] = await rclient.execute("ECHO", i)

    assert await rclient.execute("SET", f"{unique}:big", big) == b"OK"
    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(small, i)
        results["big"] = await rclient.execute("GET", f"{unique}:big")
    assert results.pop("big") == big
    assert results == {f"echo{i}": str(i).encode() for i in range(20)}
    await rclient.execute("DEL", f"{unique}:big")


async def test_execute_on_primaries_on_one_server(rclient: Client) -> None:
    assert await rclient.execute_on_primaries("PING") == [b"PONG"]
    with pytest.raises(ResponseError, match="unknown command"):
        await rclient.execute_on_primaries("NO-SUCH-COMMAND")


async def test_a_closed_client_says_so(server_url: str) -> None:
    async with open_client(server_url) as client:
        assert await client.execute("PING") == b"PONG"
    with pytest.raises(ClosedError):
        await client.execute("PING")
    with pytest.raises(ClosedError):
        async with client.blocking():
            pass
    with pytest.raises(ClosedError):
        async with client.subscribe("c"):
            pass


async def test_statistics(server_url: str) -> None:
    async with open_client(server_url) as client:
        [before] = client.statistics()
        assert before.connected
        assert before.connects == 1
        async with anyio.create_task_group() as tg:
            for i in range(30):
                tg.start_soon(client.execute, "ECHO", i)
        async with client.blocking():
            [during] = client.statistics()
        [after] = client.statistics()
        assert after.requests - before.requests == 30
        assert 1 <= after.writes - before.writes < 30
        assert after.waiting == 0
        assert (during.blocking_in_use, during.blocking_idle) == (1, 0)
        assert (after.blocking_in_use, after.blocking_idle) == (0, 1)
    [closed] = client.statistics()
    assert not closed.connected
