"""Sinks on a real 3-master Redis Cluster: every script and read touches one slot."""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import anyio.abc
import pytest

from pulse_trio.streaming import OLDEST, Stream
from pulse_trio.streaming._options import key_slot

from .conftest import wait_until, wait_until_async
from .test_sink import consumers, consuming, pending_count

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

Client = Any


async def test_two_instances_split_and_ack_on_a_cluster(
    cluster_client: Client, unique: str
) -> None:
    stream = Stream(cluster_client, unique, max_len=0)
    async with contextlib.AsyncExitStack() as stack:
        sinks = [
            await stack.enter_async_context(stream.open_sink("s", max_polled=10)) for _ in range(2)
        ]
        received = [await stack.enter_async_context(consuming(sink)) for sink in sinks]
        ids: list[str] = []
        for batch in range(4):
            ids += await stream.add_many([(f"e{batch}.{i}", b"") for i in range(50)])
        await wait_until(lambda: sum(map(len, received)) >= 200, what="200 events")

        async def settled() -> bool:
            return await pending_count(cluster_client, unique, "s") == 0

        await wait_until_async(settled)
        got = [e.id for events in received for e in events]
        assert sorted(got) == sorted(ids)
        assert all(received)


async def test_reclaim_and_stale_deletion_on_a_cluster(cluster_client: Client, unique: str) -> None:
    stream = Stream(cluster_client, unique)
    options: dict[str, Any] = {"ack_grace_period": 0.3, "block": 0.1}
    async with stream.open_sink("s", start=OLDEST, **options) as leaving:
        ids = await stream.add_many([(f"e{i}", b"") for i in range(3)])
        with anyio.fail_after(5):
            held = [await leaving.__anext__() for _ in ids]
        assert [e.id for e in held] == ids
    async with stream.open_sink("s", **options) as other, consuming(other) as events:
        await wait_until(lambda: len(events) >= 3, what="reclaimed events")
        assert sorted(e.id for e in events) == ids
        assert all(e.deliveries >= 2 for e in events)

        async def deleted() -> bool:
            return leaving.consumer not in await consumers(cluster_client, unique, "s")

        await wait_until_async(deleted, what="stale consumer deleted")


async def test_dead_letter_in_another_slot(cluster_client: Client, unique: str) -> None:
    stream = Stream(cluster_client, unique)
    dead = Stream(cluster_client, unique + "-dead-letters")
    assert key_slot(stream.key) != key_slot(dead.key)
    async with stream.open_sink(
        "s", ack_grace_period=0.1, block=0.1, max_deliveries=1, dead_letter=dead
    ) as sink:
        poison = await stream.add("poison", b"x")
        async with consuming(sink, ack=False) as events:

            async def moved() -> bool:
                return (await dead.info()).length == 1

            await wait_until_async(moved, what="dead-letter entry")
            assert [e.deliveries for e in events] == [1]
        [entry] = await cluster_client.xrange(dead.key)
        assert entry.field_values[b"original_id"] == str(poison).encode()
        assert entry.field_values[b"deliveries"] == b"1"
        assert await pending_count(cluster_client, unique, "s") == 0


async def test_streams_in_several_slots(cluster_client: Client, unique: str) -> None:
    streams = [Stream(cluster_client, f"{unique}-{i}") for i in range(4)]
    assert len({key_slot(s.key) for s in streams}) > 1
    first, *others = streams
    async with first.open_sink("s", block=0.2) as sink, consuming(sink) as events:
        for other in others:
            await sink.add_stream(other)
        for s in streams:
            await s.add(s.name, b"")
        await wait_until(lambda: len(events) >= 4)
        assert {e.event_name for e in events} == {s.name for s in streams}
        assert {e.stream_name for e in events} == {s.name for s in streams}
        await sink.remove_stream(others[0])
        assert await consumers(cluster_client, others[0].name, "s") == {}

        async def settled() -> bool:
            counts = [await pending_count(cluster_client, s.name, "s") for s in streams]
            return sum(counts) == 0

        await wait_until_async(settled)
