"""Sinks against a real server: acks, sharing, reclaim, dead letters, filters, faults."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import pytest

import pulse_trio
from pulse_trio import streaming
from pulse_trio.streaming import NEWEST, OLDEST, Event, Stream
from pulse_trio.testing import EmbeddedServer

from .._util import consuming as consuming
from .._util import lent_connections, offline_client
from .conftest import wait_until_async

pytestmark = pytest.mark.anyio

Client = Any
GRACE = 0.3


async def pending_count(client: Client, stream: str, sink: str) -> int:
    summary = await client.xpending(streaming._event.stream_key(stream), sink)
    return int(summary.pending)


async def consumers(client: Client, stream: str, sink: str) -> dict[str, int]:
    """Consumer name -> pending count, from XINFO CONSUMERS."""
    raw = await client.xinfo_consumers(streaming._event.stream_key(stream), sink)
    return {item[b"name"].decode(): int(item[b"pending"]) for item in raw}


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("bad name", {}, "invalid sink name"),
        ("", {}, "invalid sink name"),
        ("s", {"topic_pattern": "(unclosed"}, "valid regex"),
        ("s", {"block": -1}, "block"),
        ("s", {"ack_grace_period": 0}, "ack_grace_period"),
        ("s", {"ack_grace_period": -2}, "ack_grace_period"),
        ("s", {"ack_grace_period": float("inf")}, "ack_grace_period"),
        ("s", {"max_polled": 0}, "max_polled"),
        ("s", {"buffer_size": 0}, "buffer_size"),
        ("s", {"max_deliveries": 0}, "max_deliveries"),
        ("s", {"max_deliveries": 2, "no_ack": True}, "no_ack"),
        ("s", {"dead_letter": "dl"}, "needs max_deliveries"),
        ("s", {"dead_letter": "bad*name", "max_deliveries": 2}, "invalid dead-letter"),
        ("s", {"start": "nope"}, "invalid event id"),
    ],
)
async def test_open_sink_validates_before_io(
    name: str, options: dict[str, Any], message: str, unique: str
) -> None:
    # A client that fails the test on any I/O.
    offline = offline_client()
    stream = Stream(offline, unique)
    with pytest.raises(ValueError, match=message):
        stream.open_sink(name, **options)


async def test_dead_letter_must_differ_from_the_stream(client: Client, unique: str) -> None:
    with pytest.raises(ValueError, match="must differ"):
        Stream(client, unique).open_sink("s", max_deliveries=1, dead_letter=unique)


async def test_wrong_type_key_raises_from_async_with(client: Client, unique: str) -> None:
    await client.set(f"pulse:stream:{unique}", "not a stream")
    with pytest.raises(streaming.StreamError, match="not a Redis stream"):
        async with Stream(client, unique).open_sink("s"):
            pytest.fail("the block must not start")


# --- basics --------------------------------------------------------------------------------


async def test_ack_removes_entries_from_the_pending_list(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_sink("s", start=OLDEST, block=0.2) as sink:
        ids = await stream.add_many([("a", b"1"), ("b", b"2"), ("c", b"3", "t")])
        received = [await sink.__anext__() for _ in range(3)]
        assert [e.id for e in received] == ids
        assert [e.event_name for e in received] == ["a", "b", "c"]
        assert received[2].topic == "t"
        assert all(e.sink_name == "s" and e.deliveries == 1 for e in received)
        assert await pending_count(client, unique, "s") == 3
        assert await sink.ack(*received) == 3
        assert await pending_count(client, unique, "s") == 0
        assert await sink.ack(*received) == 0


async def test_wire_format_is_pulses(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_sink("mails") as sink:
        assert len(sink.consumer) == 26  # a ULID
        assert await consumers(client, unique, "mails") == {sink.consumer: 0}
        members = await client.hget(f"map:stream:{unique}:sinks:content", "mails")
        assert json.loads(members) == [sink.consumer]
        keepalive = await client.hget("map:sink:mails:keepalive:content", sink.consumer)
        server_ns = int((await client.time()).timestamp() * 1e9)
        assert abs(server_ns - int(keepalive)) < 5e9
    # Nothing was pending: the consumer and its registrations are gone.
    assert await consumers(client, unique, "mails") == {}
    # (rmap removes a key whose list becomes empty)
    assert await client.hget(f"map:stream:{unique}:sinks:content", "mails") is None
    assert await client.hget("map:sink:mails:keepalive:content", sink.consumer) is None


async def test_start_applies_when_the_group_is_created(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    first = await stream.add("old", b"")
    async with stream.open_sink("oldest", start=OLDEST) as sink:
        assert (await sink.__anext__()).id == first
    async with stream.open_sink("newest", start=NEWEST) as sink:
        new = await stream.add("new", b"")
        assert (await sink.__anext__()).id == new
    # The group exists now: another start position is ignored.
    async with stream.open_sink("newest", start=OLDEST, block=0.1) as sink:
        with anyio.move_on_after(0.3):
            event = await sink.__anext__()
            pytest.fail(f"the group's position was reset: got {event}")


async def test_go_shaped_entry_is_received(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_sink("s") as sink:
        raw = await client.xadd(stream.key, {"n": "user.created", "p": b"\x00\xff", "t": "eu"})
        event = await sink.__anext__()
        assert (event.id, event.event_name, event.payload, event.topic) == (
            raw.decode(),
            "user.created",
            b"\x00\xff",
            "eu",
        )


async def test_malformed_entry_is_skipped_and_acked(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_sink("s") as sink:
        await client.xadd(stream.key, {"foo": "bar"})
        good = await stream.add("good", b"")
        event = await sink.__anext__()
        assert event.id == good
        await sink.ack(event)
        assert await pending_count(client, unique, "s") == 0


async def test_filtered_events_are_acked(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with (
        stream.open_sink("exact", topic="a") as exact,
        stream.open_sink("pattern", topic_pattern="^b") as pattern,
    ):
        await stream.add_many([("1", b"", "a"), ("2", b"", "b1"), ("3", b""), ("4", b"", "a")])
        got_exact = [await exact.__anext__() for _ in range(2)]
        got_pattern = [await pattern.__anext__() for _ in range(1)]
        assert [e.event_name for e in got_exact] == ["1", "4"]
        assert [e.event_name for e in got_pattern] == ["2"]
        await exact.ack(*got_exact)
        await pattern.ack(*got_pattern)
        assert await pending_count(client, unique, "exact") == 0
        assert await pending_count(client, unique, "pattern") == 0
        stats = exact.statistics()
        assert (stats.delivered, stats.skipped, stats.acked, stats.buffered) == (2, 2, 2, 0)
        stats = pattern.statistics()
        assert (stats.delivered, stats.skipped, stats.acked) == (1, 3, 1)


async def test_no_ack_leaves_nothing_pending(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_sink("s", no_ack=True) as sink:
        await stream.add("a", b"")
        event = await sink.__anext__()
        assert event.event_name == "a"
        assert await pending_count(client, unique, "s") == 0
        assert await sink.ack(event) == 0


async def test_ack_rejects_foreign_events(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_sink("s") as sink:
        foreign = Event("1-1", unique, "other", "n", None, b"")
        with pytest.raises(ValueError, match="not by sink 's'"):
            await sink.ack(foreign)


async def test_exit_is_prompt_while_blocked(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_sink("s", block=30.0) as sink:
        await anyio.sleep(0.1)  # let XREADGROUP block
        started = time.monotonic()
    assert time.monotonic() - started < 1.0
    assert sink.closed
    assert [event async for event in sink] == []


async def test_body_errors_come_out_unwrapped(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    with pytest.raises(KeyError, match="mine"):
        async with stream.open_sink("s", block=10) as sink:
            raise KeyError("mine")
    assert sink.closed


async def test_unreachable_redis_raises_redis_unavailable(
    own_server: EmbeddedServer, unique: str
) -> None:
    async with pulse_trio.connect(own_server.url) as client:
        await own_server.stop()
        with pytest.raises(
            pulse_trio.RedisUnavailableError, match=f"unreachable.*{unique}|{unique}.*unreachable"
        ) as info:
            async with Stream(client, unique).open_sink("s"):
                pytest.fail("the block must not start")
        assert info.value.__cause__ is not None


async def test_a_slow_instance_does_not_queue_its_own_events_twice(
    client: Client, unique: str
) -> None:
    stream = Stream(client, unique)
    async with stream.open_sink("s", ack_grace_period=0.05, buffer_size=10, block=0.1) as sink:
        ids = await stream.add_many([(f"e{i}", b"") for i in range(3)])

        async def claimed_back() -> bool:
            # Each of the waiting entries was claimed back by this instance several times.
            pending = await client.xpending(stream.key, "s", "-", "+", 10)
            return len(pending) == 3 and all(p.delivered >= 3 for p in pending)

        await wait_until_async(claimed_back, what="the slow instance's entries claimed back")
        with anyio.fail_after(5):
            received = [await sink.__anext__() for _ in ids]
        assert [e.id for e in received] == ids
        await sink.ack(*received)
        assert sink.statistics().buffered == 0
        with anyio.move_on_after(0.2):
            extra = await sink.__anext__()
            pytest.fail(f"queued twice: {extra}")
        assert sink.statistics().delivered == 3


# --- ack_nowait ------------------------------------------------------------------------------


async def test_ack_nowait_is_sent_by_the_sink_in_batches(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_sink("s", start=OLDEST, block=0.1) as sink:
        await stream.add_many([("e", str(i).encode()) for i in range(50)])
        with anyio.fail_after(5):
            for _ in range(50):
                sink.ack_nowait(await sink.__anext__())  # no round trip in the consumer

        async def all_acked() -> bool:
            return await pending_count(client, unique, "s") == 0

        await wait_until_async(all_acked, what="queued acks sent")
        assert sink.statistics().acked == 50


async def test_ack_nowait_is_flushed_when_the_sink_leaves(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_sink("s", start=OLDEST, block=0.1) as sink:
        await stream.add_many([("e", b"1"), ("e", b"2"), ("e", b"3")])
        with anyio.fail_after(5):
            events = [await sink.__anext__() for _ in range(3)]
        sink.ack_nowait(*events)  # and leave at once
    assert await pending_count(client, unique, "s") == 0
    # Nothing was pending any more, so the instance's consumer left the group.
    assert await consumers(client, unique, "s") == {}
    with pytest.raises(pulse_trio.ClosedError, match="ack_nowait"):
        sink.ack_nowait(events[0])
    assert await sink.ack(events[0]) == 0  # awaited acks still work after the block


async def test_ack_nowait_then_a_cancelled_block_leaves_no_trace(
    client: Client, unique: str
) -> None:
    """Leaving by cancellation keeps the order of a plain exit: queued acks are sent before
    the consumer unregisters (it had been cancelled with the block and unregistered first,
    found pending entries and stayed in the group, its keep-alive with it)."""
    for attempt in range(8):
        stream = Stream(client, f"{unique}-{attempt}")
        with anyio.CancelScope() as scope:
            async with stream.open_sink("s", start=OLDEST, block=0.1) as sink:
                await stream.add_many([("e", b"1"), ("e", b"2")])
                with anyio.fail_after(5):
                    events = [await sink.__anext__() for _ in range(2)]
                sink.ack_nowait(*events)
                scope.cancel()
                await anyio.sleep(5)
        assert await pending_count(client, stream.name, "s") == 0
        assert await consumers(client, stream.name, "s") == {}, f"attempt {attempt}"
        assert await client.hget("map:sink:s:keepalive:content", sink.consumer) is None


async def test_remove_stream_sends_queued_acks_first(client: Client, unique: str) -> None:
    """Acks queued by ack_nowait for a stream are sent before its consumer unregisters,
    so that a consumer with nothing left to process leaves the group and membership."""
    stream = Stream(client, unique)
    async with stream.open_sink("s", start=OLDEST, block=0.1) as sink:
        for attempt in range(8):
            other = Stream(client, f"{unique}-{attempt}")
            await sink.add_stream(other, start=OLDEST)
            await other.add_many([("e", b"1"), ("e", b"2")])
            with anyio.fail_after(5):
                events = [await sink.__anext__() for _ in range(2)]
            sink.ack_nowait(*events)
            await sink.remove_stream(other)
            assert await pending_count(client, other.name, "s") == 0
            assert sink.consumer not in await consumers(client, other.name, "s"), attempt
            members = await client.hget(f"map:stream:{other.name}:sinks:content", "s")
            assert members is None or sink.consumer not in json.loads(members)


async def test_ack_nowait_checks_its_events(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_sink("s", start=OLDEST, block=0.1) as sink:
        await stream.add("e", b"")
        with anyio.fail_after(5):
            event = await sink.__anext__()
        with pytest.raises(ValueError, match="not by sink 'other'"):
            async with stream.open_sink("other", block=0.1) as other:
                other.ack_nowait(event)
        with pytest.raises(TypeError, match="Event"):
            sink.ack_nowait("1-0")  # type: ignore[arg-type]
        sink.ack_nowait(event)


async def test_a_sink_needs_one_dedicated_connection_per_stream(
    server_url: str, unique: str
) -> None:
    """One dedicated connection runs a one-stream sink: its blocking reads; every other
    command (keep-alives, membership, claims, acks) goes on the shared connection.

    Before sinks wrote their maps through the stateless rmap layer they joined two replicas
    (two subscriptions) and needed 2 x streams + 1 dedicated connections: this would hang.
    """
    async with pulse_trio.connect(server_url, max_blocking_connections=1) as small:
        stream = Stream(small, unique)
        async with stream.open_sink("s", block=0.1, ack_grace_period=0.3) as sink:
            await stream.add_many([("e", str(i).encode()) for i in range(5)])
            with anyio.fail_after(10):
                events = [await sink.__anext__() for _ in range(5)]
                assert await sink.ack(*events) == 5
                await anyio.sleep(0.25)  # keep-alives and a reclaim round run meanwhile
                assert await small.execute("PING") == b"PONG"
            [node] = small.statistics()
            assert node.blocking_in_use + node.blocking_idle == 1
        assert lent_connections(small) == 0
