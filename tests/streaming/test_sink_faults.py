"""Sinks under faults: killed processes, destroyed streams, lost groups, killed connections,
Redis restarts."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

import pulse_trio
from pulse_trio.streaming import Stream
from pulse_trio.testing import EmbeddedServer

from .conftest import wait_until, wait_until_async
from .test_sink import consumers, consuming

pytestmark = pytest.mark.anyio

Client = Any
SINK_PROCESS = Path(__file__).with_name("sink_process.py")


async def command_calls(client: Client, *names: str) -> dict[str, int]:
    """How many times the server ran each command (INFO commandstats)."""
    info = await client.info("commandstats")
    return {name: int(info.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in names}


def names_of(events: list[Any]) -> set[str]:
    return {event.event_name for event in events}


async def test_killed_sink_process_events_go_to_another_instance(
    client: Client, server_url: str, unique: str
) -> None:
    stream = Stream(client, unique)
    command = [sys.executable, str(SINK_PROCESS), server_url, unique, "s", "0.3"]
    async with await anyio.open_process(command) as process:
        assert process.stdout is not None
        lines = BufferedByteReceiveStream(process.stdout)
        with anyio.fail_after(20):
            word, killed_consumer = (await lines.receive_until(b"\n", 1000)).decode().split()
            assert word == "ready"
            ids = await stream.add_many([(f"e{i}", b"") for i in range(5)])
            held = [(await lines.receive_until(b"\n", 1000)).decode() for _ in ids]
        assert held == [f"event {eid}" for eid in ids]
        process.send_signal(signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL
    assert (await consumers(client, unique, "s"))[killed_consumer] == 5

    async with (
        stream.open_sink("s", ack_grace_period=0.3, block=0.1) as sink,
        consuming(sink) as events,
    ):
        await wait_until(lambda: len(events) >= 5, what="the killed process's events")
        assert sorted(e.id for e in events) == ids
        assert all(e.deliveries >= 2 for e in events)

        async def deleted() -> bool:
            return killed_consumer not in await consumers(client, unique, "s")

        await wait_until_async(deleted, what="the killed process's consumer deleted")


async def test_destroyed_stream_is_recreated_without_a_hot_loop(
    client: Client, unique: str
) -> None:
    stream = Stream(client, unique)
    async with stream.open_sink("s", block=0.2) as sink, consuming(sink) as events:
        await stream.add("before", b"")
        await wait_until(lambda: "before" in names_of(events))
        before = await command_calls(client, "xreadgroup", "xgroup|create")
        await stream.destroy()
        await anyio.sleep(1.0)  # the window in which calls are counted
        after = await command_calls(client, "xreadgroup", "xgroup|create")
        # Blocking reads of 0.2 s make about five calls a second; a hot loop makes thousands.
        assert after["xreadgroup"] - before["xreadgroup"] <= 20
        assert 1 <= after["xgroup|create"] - before["xgroup|create"] <= 5
        await stream.add("after", b"")
        await wait_until(lambda: "after" in names_of(events), what="event after recreation")
        # The instance is registered again in the (reset) membership map.
        members = await client.hget(f"map:stream:{unique}:sinks:content", "s")
        assert members is not None
        assert sink.consumer in members.decode()


async def test_lost_group_is_recreated_after_the_last_event_seen(
    client: Client, unique: str
) -> None:
    stream = Stream(client, unique)
    async with stream.open_sink("s", block=5.0) as sink, consuming(sink) as events:
        await stream.add("before", b"")
        await wait_until(lambda: "before" in names_of(events))
        await client.xgroup_destroy(stream.key, "s")
        # Added before the sink recreates the group (it backs off first): a group recreated
        # at "$" would skip it.
        await stream.add("gap", b"")
        await wait_until(lambda: "gap" in names_of(events), what="event added while lost")
        await stream.add("after", b"")
        await wait_until(lambda: "after" in names_of(events))
        assert [e.event_name for e in events].count("before") == 1


@pytest.mark.parametrize("racing", ["XINFO GROUPS", "XGROUP CREATECONSUMER"])
async def test_a_stream_destroyed_again_while_its_group_is_recreated(
    client: Client, unique: str, racing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream vanishes again between the calls that recreate the group (XGROUP CREATE
    MKSTREAM, XINFO GROUPS, XGROUP CREATECONSUMER): the sink tries again later, as after any
    lost group, instead of ending with a RedisCommandError ("no such key", "requires the
    key to exist")."""
    stream = Stream(client, unique)
    async with stream.open_sink("s", block=0.1) as sink, consuming(sink) as events:
        real_execute, real_execute_many = client.execute, client.execute_many
        raced: list[Any] = []

        def is_racing(command: Any) -> bool:
            return " ".join(str(arg) for arg in command[:2]).upper() == racing

        async def destroy_once(key: Any) -> None:
            if not raced:
                raced.append(key)
                await real_execute("DEL", key)

        async def execute(*args: Any, **kwargs: Any) -> Any:
            if is_racing(args):
                await destroy_once(args[2])
            return await real_execute(*args, **kwargs)

        async def execute_many(commands: Any, **kwargs: Any) -> Any:
            for command in commands:
                if is_racing(command):
                    await destroy_once(command[2])
            return await real_execute_many(commands, **kwargs)

        monkeypatch.setattr(client, "execute", execute)
        monkeypatch.setattr(client, "execute_many", execute_many)
        await stream.destroy()
        await wait_until(lambda: bool(raced), what="a recreation racing with a destroy")
        await stream.add("after", b"")
        await wait_until(lambda: "after" in names_of(events), what="event after recreation")
    assert sink.closed


async def test_client_kill_of_the_blocking_connection(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_sink("s", block=5.0) as sink, consuming(sink) as events:
        blocked: list[int] = []

        async def reading() -> bool:
            blocked[:] = [c["id"] for c in await client.client_list() if c["cmd"] == "xreadgroup"]
            return bool(blocked)

        await wait_until_async(reading, what="a blocked XREADGROUP")
        assert await client.client_kill(identifier=blocked[0])
        await stream.add("after kill", b"")
        await wait_until(lambda: "after kill" in names_of(events), what="event after the kill")
        assert not sink.closed


async def test_redis_restart_loses_nothing(own_server: EmbeddedServer, unique: str) -> None:
    async with pulse_trio.connect(own_server.url) as client:
        stream = Stream(client, unique, max_len=0)
        options: dict[str, Any] = {"block": 0.2, "ack_grace_period": 0.5}
        async with stream.open_sink("s", **options) as sink, consuming(sink) as events:
            ids = await stream.add_many([(f"a{i}", b"") for i in range(20)])
            await wait_until(lambda: len(events) >= 20)
            await own_server.restart()

            async def add_after_restart() -> bool:
                try:
                    ids.extend(await stream.add_many([(f"b{i}", b"") for i in range(20)]))
                except Exception:
                    return False
                return True

            await wait_until_async(add_after_restart, within=15, what="server back")
            await wait_until(
                lambda: set(ids) <= {e.id for e in events}, within=15, what="all 40 events"
            )
            assert not sink.closed
