"""Several instances of one sink: splitting, reclaim, stale consumers, dead letters, streams."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import anyio
import anyio.abc
import pytest

import pulse_trio
from pulse_trio import streaming
from pulse_trio._boundary import leaves
from pulse_trio._lua import bind_script
from pulse_trio.streaming import OLDEST, Event, Stream
from pulse_trio.streaming._options import lease_key

from .conftest import wait_until, wait_until_async
from .test_sink import consumers, consuming, pending_count

pytestmark = pytest.mark.anyio

Client = Any
GRACE = 0.3


@pytest.mark.parametrize("instances", [2, 3])
async def test_instances_split_events_without_loss_or_duplicate(
    client: Client, unique: str, instances: int
) -> None:
    stream = Stream(client, unique, max_len=0)
    async with contextlib.AsyncExitStack() as stack:
        sinks = [
            await stack.enter_async_context(
                stream.open_sink("s", max_polled=20, ack_grace_period=30.0)
            )
            for _ in range(instances)
        ]
        received = [await stack.enter_async_context(consuming(sink)) for sink in sinks]
        ids: list[str] = []
        for batch in range(10):
            ids += await stream.add_many([(f"e{batch}.{i}", b"") for i in range(100)])
        await wait_until(lambda: sum(map(len, received)) >= 1000, what="1000 events")

        async def settled() -> bool:
            return await pending_count(client, unique, "s") == 0

        await wait_until_async(settled, what="every event acked")
        got = [event.id for events in received for event in events]
        assert len(got) == 1000, "an event was delivered twice"
        assert set(got) == set(ids)
        assert all(events for events in received), "an instance got nothing"
        assert all(event.deliveries == 1 for events in received for event in events)


async def test_unacked_events_of_a_leaving_instance_go_to_another(
    client: Client, unique: str
) -> None:
    stream = Stream(client, unique)
    # Long enough that nothing is reclaimed before the leaving instance is checked.
    options: dict[str, Any] = {"ack_grace_period": 0.6, "block": 0.1}
    leave = anyio.Event()
    left = anyio.Event()
    ids: list[str] = []

    async def hold_and_leave(*, task_status: anyio.abc.TaskStatus[str]) -> None:
        async with stream.open_sink("s", start=OLDEST, **options) as leaving:
            # Alone when the events come: this instance holds them all.
            ids.extend(await stream.add_many([(f"e{i}", b"") for i in range(5)]))
            held = [await leaving.__anext__() for _ in range(5)]
            assert [e.id for e in held] == ids
            task_status.started(leaving.consumer)
            await leave.wait()
        left.set()

    async with anyio.create_task_group() as tg:
        with anyio.fail_after(5):
            gone_consumer = await tg.start(hold_and_leave)
        async with stream.open_sink("s", **options) as staying:
            leave.set()
            await left.wait()
            # Left without acking: its consumer stays, with its pending entries.
            assert (await consumers(client, unique, "s"))[gone_consumer] == 5
            async with consuming(staying) as events:
                await wait_until(lambda: len(events) >= 5, what="5 reclaimed events")
                assert sorted(e.id for e in events) == ids
                assert all(e.deliveries >= 2 for e in events)

                # Once its entries were claimed, the gone instance's consumer is deleted,
                # and removed from the membership and keep-alive maps.
                async def deleted() -> bool:
                    return gone_consumer not in await consumers(client, unique, "s")

                await wait_until_async(deleted, what="stale consumer deleted")

                # Removed from the membership by the next command of the same round.
                async def unlisted() -> bool:
                    members = await client.hget(f"map:stream:{unique}:sinks:content", "s")
                    return bool(json.loads(members) == [staying.consumer])

                await wait_until_async(unlisted, what="stale consumer unlisted")

                async def keepalive_gone() -> bool:
                    key = "map:sink:s:keepalive:content"
                    return await client.hget(key, gone_consumer) is None

                await wait_until_async(keepalive_gone, what="keep-alive removed")


async def test_a_consumer_with_pending_entries_is_never_deleted(
    client: Client, unique: str
) -> None:
    stream = Stream(client, unique)
    await client.xgroup_create(stream.key, "s", "0", mkstream=True)
    ids = await stream.add_many([(f"e{i}", b"") for i in range(3)])
    # A dead instance: a consumer holding three entries, without any keep-alive.
    await client.xreadgroup("s", "ghost", streams={stream.key: ">"}, count=10)

    async def ghost_is_stale() -> bool:
        raw = await client.xinfo_consumers(stream.key, "s")
        return any(c[b"name"] == b"ghost" and c[b"idle"] >= 300 for c in raw)

    await wait_until_async(ghost_is_stale, what="ghost idle beyond the stale threshold")
    # A buffer of one and a slow consumer: a reclaim round claims one entry, which fills the
    # buffer, then judges the consumers while the stale ghost still holds the others.
    # Deleting it then would lose them.
    received: list[Event] = []
    async with stream.open_sink("s", ack_grace_period=0.1, buffer_size=1, block=0.1) as sink:
        with anyio.fail_after(5):
            for _ in range(3):
                await anyio.sleep(0.15)  # slow on purpose: several reclaim rounds pass
                event = await sink.__anext__()
                received.append(event)
                await sink.ack(event)
        assert sorted(e.id for e in received) == ids

        async def ghost_deleted() -> bool:
            return "ghost" not in await consumers(client, unique, "s")

        await wait_until_async(ghost_deleted, what="ghost deleted once empty")


async def test_delete_script_refuses_a_consumer_with_pending_entries(
    client: Client, unique: str
) -> None:
    stream = Stream(client, unique)
    delete = bind_script(client, "sink_delete_consumer")
    await client.xgroup_create(stream.key, "s", "0", mkstream=True)
    [eid] = await stream.add_many([("e", b"")])
    await client.xreadgroup("s", "busy", streams={stream.key: ">"})
    await client.xgroup_createconsumer(stream.key, "s", "idle")
    assert await delete(keys=[stream.key], args=["s", "busy"]) == 0
    assert await delete(keys=[stream.key], args=["s", "idle"]) == 1
    assert set(await consumers(client, unique, "s")) == {"busy"}
    await client.xack(stream.key, "s", [eid])
    assert await delete(keys=[stream.key], args=["s", "busy"]) == 1
    assert await delete(keys=[stream.key], args=["nogroup", "busy"]) == -1
    assert await delete(keys=["pulse:stream:missing"], args=["s", "busy"]) == -1


async def test_a_live_slow_instance_is_not_deleted(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    options: dict[str, Any] = {"ack_grace_period": 0.2, "block": 0.1}
    async with stream.open_sink("s", buffer_size=1, **options) as slow:
        # The slow instance never iterates: its buffer fills and it stops reading, so its
        # consumer goes idle; its keep-alive protects it.
        await stream.add_many([("a", b""), ("b", b""), ("c", b"")])
        async with stream.open_sink("s", **options) as other, consuming(other) as events:
            await wait_until(lambda: len(events) >= 2, what="the others' events")
            # Twice the stale threshold later the slow instance is still a member.
            await anyio.sleep(0.8)
            assert slow.consumer in await consumers(client, unique, "s")


async def test_poison_event_goes_to_the_dead_letter_stream(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    dead = Stream(client, unique + "-dead")
    async with stream.open_sink(
        "s", ack_grace_period=0.1, block=0.1, max_deliveries=3, dead_letter=dead
    ) as sink:
        poison = await stream.add("poison", b"\x00boom", topic="eu")
        assert poison is not None
        async with consuming(sink, ack=False) as events:

            async def dead_lettered() -> bool:
                return (await dead.info()).length == 1

            await wait_until_async(dead_lettered, what="dead-letter entry")
            assert [e.deliveries for e in events] == [1, 2, 3]
            assert all(e.id == poison for e in events)
            assert await pending_count(client, unique, "s") == 0
            [fields] = [e.field_values for e in await client.xrange(dead.key)]
            assert fields == {
                b"n": b"poison",
                b"p": b"\x00boom",
                b"t": b"eu",
                b"original_id": poison.encode(),
                b"original_stream": unique.encode(),
                b"sink": b"s",
                b"deliveries": b"3",
            }
            # Not delivered again: nothing is pending any more, and a few grace periods on
            # nothing came.
            await anyio.sleep(0.4)
            assert len(events) == 3
            stats = sink.statistics()
            assert (stats.delivered, stats.redelivered, stats.dead_lettered) == (3, 2, 1)
        # The dead-letter stream is an ordinary pulse stream.
        async with dead.open_reader(start=OLDEST) as reader:
            with anyio.fail_after(5):
                event = await reader.__anext__()
            assert (event.event_name, event.payload, event.topic) == ("poison", b"\x00boom", "eu")


async def test_max_deliveries_without_dead_letter_drops(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_sink("s", ack_grace_period=0.1, block=0.1, max_deliveries=1) as sink:
        await stream.add("poison", b"")
        async with consuming(sink, ack=False) as events:
            await wait_until(lambda: len(events) == 1)

            async def settled() -> bool:
                return await pending_count(client, unique, "s") == 0

            await wait_until_async(settled, what="dropped after one delivery")
            assert [e.deliveries for e in events] == [1]


async def test_add_and_remove_streams(client: Client, unique: str) -> None:
    first = Stream(client, unique + "a")
    second = Stream(client, unique + "b")
    async with first.open_sink("s", block=0.1) as sink, consuming(sink) as events:
        await sink.add_stream(second)
        await sink.add_stream(second)  # idempotent by name
        await sink.add_stream(Stream(client, second.name))
        assert sink.streams == (first.name, second.name)
        await first.add("a1", b"")
        await second.add("b1", b"")
        await wait_until(lambda: {"a1", "b1"} <= {e.event_name for e in events})
        by_name = {e.event_name: e.stream_name for e in events}
        assert by_name == {"a1": first.name, "b1": second.name}
        members = await client.hget(f"map:stream:{second.name}:sinks:content", "s")
        assert json.loads(members) == [sink.consumer]

        await sink.remove_stream(second.name)
        await sink.remove_stream(second.name)  # a no-op now
        assert list(sink.streams) == [first.name]
        # Nothing was pending there: the consumer left that group and its membership.
        assert await consumers(client, second.name, "s") == {}
        assert await client.hget(f"map:stream:{second.name}:sinks:content", "s") is None
        await second.add("b2", b"")
        await first.add("a2", b"")
        await wait_until(lambda: "a2" in {e.event_name for e in events})
        assert "b2" not in {e.event_name for e in events}

        # The group stayed: re-adding resumes where the sink left off.
        await sink.add_stream(second)
        await wait_until(lambda: "b2" in {e.event_name for e in events})
        # Every stream removed: the instance idles, and leaves cleanly.
        await sink.remove_stream(first)
        await sink.remove_stream(second)
        assert not sink.streams
    assert await client.hget("map:sink:s:keepalive:content", sink.consumer) is None
    with pytest.raises(pulse_trio.ClosedError):
        await sink.add_stream(second)
    with pytest.raises(pulse_trio.ClosedError):
        await sink.remove_stream(second)


async def test_ack_of_several_streams_is_one_call(client: Client, unique: str) -> None:
    first = Stream(client, unique + "a")
    second = Stream(client, unique + "b")
    async with first.open_sink("s", block=0.1) as sink:
        await sink.add_stream(second)
        await first.add("a", b"")
        await second.add("b", b"")
        with anyio.fail_after(5):
            events = [await sink.__anext__() for _ in range(2)]
        assert await sink.ack(*events) == 2
        assert await pending_count(client, first.name, "s") == 0
        assert await pending_count(client, second.name, "s") == 0


async def test_reclaim_lease(client: Client, unique: str) -> None:
    lease = bind_script(client, "sink_lease")
    key = lease_key("s", unique)
    assert await lease(keys=[key], args=["a", "300"]) == 1
    assert await lease(keys=[key], args=["b", "300"]) == 0
    assert await lease(keys=[key], args=["a", "300"]) == 1  # renewed by its holder
    assert 0 < await client.pttl(key) <= 300

    async def expired() -> bool:
        return bool(await client.exists([key]) == 0)

    await wait_until_async(expired, what="lease expiry (Redis clock)")
    assert await lease(keys=[key], args=["b", "300"]) == 1


async def test_each_sink_and_stream_has_its_own_lease(client: Client, unique: str) -> None:
    first = Stream(client, unique + "a")
    second = Stream(client, unique + "b")
    wanted = {lease_key("s", first.name), lease_key("s", second.name), lease_key("t", first.name)}
    seen: set[str] = set()
    options: dict[str, Any] = {"ack_grace_period": 0.2, "block": 0.1}
    async with first.open_sink("s", **options) as s, first.open_sink("t", **options):
        await s.add_stream(second)

        async def all_taken() -> bool:
            for key in wanted - seen:
                if await client.exists([key]):
                    seen.add(key)
            return seen == wanted

        await wait_until_async(all_taken, what=f"leases {wanted - seen}")


async def test_add_stream_cancelled_at_any_point_leaves_nothing_behind(
    client: Client, unique: str
) -> None:
    """The rollback path of ``add_stream``: cancelled anywhere, the stream is not read and
    no consumer of this instance stays in its group or membership map."""
    first = Stream(client, unique)
    async with first.open_sink("s", block=0.1) as sink:
        cancelled = 0
        delays = [0, 0, 0.0002, 0.0004, 0.0006, 0.0008, 0.001, 0.0015, 0.002, 0.003, 0.005]
        for attempt, delay in enumerate(delays):
            other = Stream(client, f"{unique}-{attempt}")
            with anyio.move_on_after(delay) as scope:
                if delay == 0 and attempt == 0:
                    scope.cancel()  # cancelled before the first checkpoint
                await sink.add_stream(other)
            if not scope.cancelled_caught:
                assert other.name in sink.streams
                await sink.remove_stream(other)
                continue
            cancelled += 1
            assert other.name not in sink.streams
            names = (
                set(await consumers(client, other.name, "s"))
                if await client.exists([other.key])
                else set()
            )
            assert sink.consumer not in names
            members = await client.hget(f"map:stream:{other.name}:sinks:content", "s")
            assert members is None or sink.consumer not in json.loads(members)
        assert cancelled >= 2
        # The sink still works, the failed streams can be added for real.
        retry = Stream(client, f"{unique}-3")
        async with consuming(sink) as events:
            await sink.add_stream(retry)
            await retry.add("after", b"")
            await wait_until(lambda: [e.event_name for e in events] == ["after"])


async def test_a_removed_stream_is_not_listed_again_by_a_keepalive_tick(
    client: Client, unique: str
) -> None:
    """A keep-alive tick repairs the membership of every stream with one HGET each: a tick
    that read a stream's map before ``remove_stream`` unregistered the consumer must not put
    it back after (the consumer left the group, so nobody would ever remove the entry)."""
    streams = [Stream(client, f"{unique}-{i}") for i in range(12)]
    relisted = []
    async with streams[0].open_sink("s", block=0.1, ack_grace_period=0.03) as sink:
        for stream in streams[1:]:
            await sink.add_stream(stream)
        for attempt in range(24):
            removed = streams[-1 - attempt % 6]
            await sink.remove_stream(removed)
            await anyio.sleep(0.05)  # let the keep-alive ticks in flight land
            members = await client.hget(f"map:stream:{removed.name}:sinks:content", "s")
            if members is not None and sink.consumer in json.loads(members):
                relisted.append(attempt)
            await sink.add_stream(removed)
    assert relisted == []


async def test_a_dead_letter_key_of_another_type_is_reported_as_such(
    client: Client, unique: str
) -> None:
    """A dead-letter key holding a string ends the sink with a StreamError that names the
    dead-letter stream, not the stream the sink reads (whose key is fine)."""
    stream = Stream(client, unique)
    dead = Stream(client, unique + "-dead")
    await client.set(dead.key, b"not a stream")
    with pytest.raises(BaseExceptionGroup) as caught:  # noqa: PT012
        with anyio.fail_after(10):
            async with stream.open_sink(
                "s", ack_grace_period=0.1, block=0.1, max_deliveries=1, dead_letter=dead
            ) as sink:
                await stream.add("poison", b"")
                async with consuming(sink, ack=False):
                    await anyio.sleep_forever()
    [error] = [e for e in leaves(caught.value) if isinstance(e, streaming.StreamError)]
    assert error.stream == dead.name
    assert error.key == dead.key
