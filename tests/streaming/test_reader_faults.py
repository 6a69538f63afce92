"""Readers under faults: killed connections, server restarts and outages, wrong-type keys."""

from __future__ import annotations

import functools
import logging
from typing import Any

import anyio
import pytest

import pulse_trio
from pulse_trio.streaming import NEWEST, OLDEST, Stream, StreamError
from pulse_trio.testing import EmbeddedServer

from .._admin import AdminClient
from .._util import lent_connections
from .conftest import collecting, names, wait_count, wait_until, wait_until_async

pytestmark = pytest.mark.anyio

Client = Any


async def xread_client_ids(client: Client) -> list[int]:
    """Server-side ids of the connections currently running XREAD."""
    return [int(c["id"]) for c in await client.client_list() if c.get("cmd") == "xread"]


async def wait_blocked(client: Client) -> list[int]:
    """Wait until some connection blocks in XREAD; return the ids of those that do."""
    found: list[int] = []

    async def blocked() -> bool:
        found[:] = await xread_client_ids(client)
        return bool(found)

    await wait_until_async(blocked, what="a reader blocks in XREAD")
    return found


async def test_killed_reader_connection_reconnects_without_loss_or_dup(
    client: Client, unique: str
) -> None:
    stream = Stream(client, unique)
    async with stream.open_reader(block=10) as reader, collecting(reader) as events:
        for round_ in range(3):
            [victim] = await wait_blocked(client)
            assert await client.client_kill(identifier=victim)
            await stream.add_many([(f"{round_}-{i}", b"") for i in range(10)])
            await wait_count(events, 10 * (round_ + 1))
            await wait_until_async(
                functools.partial(_has_new_xread, client, victim), what="the reader re-blocks"
            )
    assert names(events) == [f"{r}-{i}" for r in range(3) for i in range(10)]
    assert lent_connections(client) == 0  # the killed connections were not kept lent


async def _has_new_xread(client: Client, old: int) -> bool:
    ids = await xread_client_ids(client)
    return bool(ids) and old not in ids


async def test_client_kill_type_normal_while_adding(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_reader(block=0.05) as reader, collecting(reader) as events:
        for i in range(60):
            await stream.add(str(i), b"")
            if i % 20 == 10:
                await client.client_kill(type_="normal", skipme=True)
        await wait_count(events, 60)
    assert names(events) == [str(i) for i in range(60)]
    assert lent_connections(client) == 0


async def test_restart_mid_stream_no_loss_no_dup(own_server: EmbeddedServer, unique: str) -> None:
    async with pulse_trio.connect(own_server.url) as client:
        stream = Stream(client, unique)
        # A small buffer and no consumer for now: the reader's cursor lags behind the stream
        # when the server goes down, so the restart happens mid-way through its reading.
        async with stream.open_reader(block=0.05, buffer_size=5, max_polled=5) as reader:
            await stream.add_many([(f"a{i}", b"") for i in range(50)])
            await own_server.restart()
            await stream.add_many([(f"b{i}", b"") for i in range(50)])
            async with collecting(reader) as events:
                await wait_count(events, 100, within=10)
                await stream.add("end", b"")
                await wait_count(events, 101)
        assert lent_connections(client) == 0
    expected = [f"a{i}" for i in range(50)] + [f"b{i}" for i in range(50)] + ["end"]
    assert names(events) == expected


async def test_loading_replies_are_retried(unique: str, caplog: pytest.LogCaptureFixture) -> None:
    """While the server loads its data it answers ``LOADING``: a transient error, retried."""
    caplog.set_level(logging.WARNING, logger="pulse_trio.streaming")
    # key-load-delay slows loading to ~0.5 s (500 us per key) and the small interval lets the
    # server answer other clients (with LOADING) meanwhile; DEBUG RELOAD saves and reloads.
    server = EmbeddedServer(
        extra_args=[
            "--key-load-delay", "500",
            "--loading-process-events-interval-bytes", "1024",
            "--enable-debug-command", "yes",
        ]
    )  # fmt: skip
    async with (
        server,
        pulse_trio.connect(server.url) as plain,
        pulse_trio.connect(server.url) as observer,
    ):
        client = AdminClient.of(plain)
        await client.mset({f"{unique}:filler:{i}": "x" for i in range(1000)})
        stream = Stream(client, unique, max_len=0)
        await stream.add_many([(str(i), b"") for i in range(300)])

        async def debug_reload() -> None:  # from the other client: this one's connection
            # would queue the reader's next XREAD behind the reload
            await observer.execute("DEBUG", "RELOAD")

        async def loading() -> bool:
            info = await client.info("persistence")
            return bool(info.get("loading"))

        # One event per XREAD and a one-event buffer: the reader waits to hand over its second
        # event; once the server is loading, consuming makes it send XREADs, answered LOADING.
        async with (
            stream.open_reader(start=OLDEST, block=0.05, max_polled=1, buffer_size=1) as reader,
            anyio.create_task_group() as tg,
        ):
            await wait_until(lambda: reader.cursors()[unique] != "0-0")
            tg.start_soon(debug_reload)
            await wait_until_async(loading, what="the server is loading")
            async with collecting(reader) as events:
                await wait_count(events, 300, within=10)
    assert names(events) == [str(i) for i in range(300)]
    assert any("LOADING" in r.getMessage() for r in caplog.records)


async def test_outage_is_retried_with_backoff_not_a_hot_loop(
    own_server: EmbeddedServer, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pulse_trio.streaming")
    async with pulse_trio.connect(own_server.url) as client:
        stream = Stream(client, unique)
        async with stream.open_reader(block=0.05) as reader, collecting(reader) as events:
            await stream.add("before", b"")
            await wait_count(events, 1)
            caplog.clear()
            await own_server.restart(down_for=1.0)
            retries = [r for r in caplog.records if "retry" in r.getMessage()]
            await stream.add("after", b"")
            await wait_count(events, 2, within=10)
            assert reader.statistics().retries >= len(retries)
        assert lent_connections(client) == 0
    # Jittered exponential backoff from 50 ms: a handful of attempts in 1 s, not hundreds.
    assert 1 <= len(retries) <= 12, [r.getMessage() for r in retries]
    assert names(events) == ["before", "after"]


async def test_wrong_type_while_reading_raises_out_of_the_block(
    client: Client, unique: str
) -> None:
    stream = Stream(client, unique)
    await stream.add("e", b"")
    with pytest.RaisesGroup(pytest.RaisesExc(StreamError, match=f"pulse:stream:{unique}")):
        async with stream.open_reader(start=OLDEST, block=0.05) as reader:
            assert (await reader.__anext__()).event_name == "e"
            await client.delete([stream.key])
            await client.set(stream.key, "now a string")
            await anyio.sleep(5)  # cancelled by the reader's failure
    assert reader.closed


async def test_wrong_type_of_an_added_stream(client: Client, unique: str) -> None:
    stream, other = Stream(client, unique), Stream(client, unique + "-o")
    await client.set(other.key, "x")
    async with stream.open_reader(block=0.05) as reader:
        with pytest.raises(StreamError, match=other.key):
            await reader.add_stream(other)
        assert reader.streams == (unique,)


async def test_calls_while_redis_is_down_raise_redis_unavailable(
    own_server: EmbeddedServer, unique: str
) -> None:
    async with pulse_trio.connect(own_server.url) as client:
        stream = Stream(client, unique, ttl=5)
        await stream.add("e", b"")
        await own_server.stop()
        for call in (
            lambda: stream.add("e", b""),
            lambda: Stream(client, unique).add("e", b""),
            lambda: stream.add_many([("e", b"")]),
            lambda: stream.remove("1-1"),
            stream.info,
            stream.destroy,
        ):
            with pytest.raises(pulse_trio.RedisUnavailableError, match=unique):
                await call()
        with pytest.raises(pulse_trio.RedisUnavailableError, match=unique):
            async with stream.open_reader():
                pass
        await own_server.start()
        assert (await stream.info()).length == 1


@pytest.mark.parametrize("start", [NEWEST, OLDEST, "1-1"])
async def test_wrong_type_at_open_raises_plainly_whatever_the_start(
    client: Client, unique: str, start: Any
) -> None:
    stream = Stream(client, unique)
    await client.set(stream.key, "x")
    with pytest.raises(StreamError, match=stream.key):
        async with stream.open_reader(start=start):
            pass
