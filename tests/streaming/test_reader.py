"""Readers: start positions, filters, several streams, back-pressure, prompt exit."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

import pulse_trio
from pulse_trio import streaming
from pulse_trio.streaming import NEWEST, OLDEST, Stream

from .._util import lent_connections, offline_client
from .conftest import collecting, names, wait_count, wait_until, wait_until_async

pytestmark = pytest.mark.anyio

Client = Any


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"topic_pattern": "(unclosed"}, "valid regex"),
        ({"block": -1}, "block"),
        ({"block": float("nan")}, "block"),
        ({"block": None}, "block"),
        ({"max_polled": 0}, "max_polled"),
        ({"max_polled": -5}, "max_polled"),
        ({"max_polled": True}, "max_polled"),
        ({"buffer_size": 0}, "buffer_size"),
        ({"buffer_size": 1.5}, "buffer_size"),
        ({"start": "not-an-id"}, "invalid event id"),
        ({"start": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"start": 17}, "invalid start"),
    ],
)
async def test_open_reader_validates_before_io(
    options: dict[str, Any], message: str, unique: str
) -> None:
    # A client that fails the test on any I/O.
    offline = offline_client()
    stream = Stream(offline, unique)
    with pytest.raises(ValueError, match=message):
        stream.open_reader(**options)


async def test_reader_used_outside_its_block_raises(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    reader = stream.open_reader()
    with pytest.raises(pulse_trio.ClosedError):
        await reader.add_stream(Stream(client, unique + "b"))
    with pytest.raises(pulse_trio.ClosedError):
        await reader.__anext__()
    async with reader:
        pass
    assert reader.closed
    with pytest.raises(pulse_trio.ClosedError):
        await reader.add_stream(Stream(client, unique + "b"))
    with pytest.raises(pulse_trio.ClosedError):
        await reader.remove_stream(unique)
    assert [event async for event in reader] == []
    with pytest.raises(RuntimeError, match="only once"):
        async with reader:
            pass


# --- start positions -----------------------------------------------------------------------


async def test_newest_skips_existing_and_delivers_new(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    await stream.add("before", b"0")
    async with stream.open_reader(block=0.05) as reader, collecting(reader) as events:
        await stream.add("after", b"1", topic="t")
        await wait_count(events, 1)
        event = events[0]
        assert (event.event_name, event.payload, event.topic) == ("after", b"1", "t")
        assert event.stream_name == unique
        assert event.sink_name is None
        assert event.deliveries == 1
        assert abs(event.created_at - datetime.now(UTC)) < timedelta(seconds=5)
    assert names(events) == ["after"]


async def test_newest_on_missing_stream_reads_from_the_start(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_reader(block=0.05) as reader, collecting(reader) as events:
        await stream.add("first", b"")
        await wait_count(events, 1)
    assert names(events) == ["first"]


async def test_newest_misses_nothing_across_quiet_periods(client: Client, unique: str) -> None:
    """Go pulse re-sends ``$`` on every XREAD and loses events between calls; we do not."""
    stream = Stream(client, unique)
    async with stream.open_reader(block=0.05) as reader, collecting(reader) as events:
        for burst in range(10):
            await stream.add_many([(f"e{burst * 10 + i}", b"x") for i in range(5)])
            for i in range(5, 10):
                await stream.add(f"e{burst * 10 + i}", b"x")
            await anyio.sleep(0.08)  # longer than the block: XREADs time out in between
        await wait_count(events, 100)
    assert names(events) == [f"e{i}" for i in range(100)]


async def test_events_added_right_after_open_are_seen(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    await stream.add("old", b"")
    for _ in range(5):
        async with stream.open_reader(block=10) as reader:
            eid = await stream.add("new", b"")
            with anyio.fail_after(5):
                event = await reader.__anext__()
            assert event.id == eid


async def test_start_oldest(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    ids = await stream.add_many([("a", b"1"), ("b", b"2")])
    async with stream.open_reader(start=OLDEST, block=0.05) as reader, collecting(reader) as ev:
        await wait_count(ev, 2)
        await stream.add("c", b"3")
        await wait_count(ev, 3)
    assert [e.id for e in ev[:2]] == ids
    assert names(ev) == ["a", "b", "c"]


async def test_start_after_id_and_at_datetime(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    for entry_id, name in [("1000-0", "a"), ("2000-0", "b"), ("2000-1", "c"), ("3000-0", "d")]:
        await client.xadd(stream.key, {"n": name, "p": b""}, identifier=entry_id)

    async def read_from(start: Any) -> list[str]:
        async with stream.open_reader(start=start, block=0.05) as reader:
            return [(await reader.__anext__()).event_name for _ in range(4 - expected[start])]

    expected: dict[Any, int] = {}
    # an id: strictly after it
    expected["2000-0"] = 2
    assert await read_from("2000-0") == ["c", "d"]
    expected["2000"] = 2
    assert await read_from("2000") == ["c", "d"]
    # a datetime: events created at or after that millisecond (2000-0 included)
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=2000)
    expected[at] = 1
    assert await read_from(at) == ["b", "c", "d"]
    # the reader's first event really is 2000-0, not something later
    async with stream.open_reader(start=at, block=0.05) as reader:
        assert (await reader.__anext__()).id == "2000-0"


# --- filters -------------------------------------------------------------------------------


async def test_topic_filter(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_reader(topic="blue", block=0.05) as reader, collecting(reader) as ev:
        await stream.add_many(
            [("1", b"", "blue"), ("2", b"", "red"), ("3", b""), ("4", b"", "blue.sky")]
        )
        await stream.add("5", b"", topic="blue")
        await wait_count(ev, 2)
        assert reader.cursors()[unique] == (await stream.info()).last_id
    assert names(ev) == ["1", "5"]


async def test_topic_pattern_is_an_unanchored_search(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with (
        stream.open_reader(topic_pattern=r"^us\.|west", block=0.05) as reader,
        stream.open_reader(topic_pattern=r"^$", block=0.05) as no_topic,
        collecting(reader) as ev,
        collecting(no_topic) as ev_none,
    ):
        await stream.add_many(
            [("1", b"", "us.east"), ("2", b"", "eu.west.1"), ("3", b"", "eu"), ("4", b"")]
        )
        await stream.add("end", b"", topic="us.end")
        await wait_count(ev, 3)
        await wait_count(ev_none, 1)
        await wait_until(lambda: no_topic.cursors()[unique] == reader.cursors()[unique])
    assert names(ev) == ["1", "2", "end"]
    assert names(ev_none) == ["4"]


async def test_topic_wins_over_pattern(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with (
        stream.open_reader(topic="a", topic_pattern="b", block=0.05) as reader,
        collecting(reader) as ev,
    ):
        await stream.add_many([("1", b"", "b"), ("2", b"", "a")])
        await wait_count(ev, 1)
        await wait_until(lambda: reader.cursors()[unique] == ev[0].id)
    assert names(ev) == ["2"]


# --- several streams -----------------------------------------------------------------------


async def test_several_streams_add_idempotent_remove_by_name(client: Client, unique: str) -> None:
    one, two, three = (Stream(client, f"{unique}-{i}") for i in (1, 2, 3))
    async with one.open_reader(block=10) as reader, collecting(reader) as ev:
        await reader.add_stream(two)
        await reader.add_stream(Stream(client, two.name))  # same name: no-op
        await reader.add_stream(two, start=OLDEST)  # still a no-op
        assert sorted(reader.streams) == sorted([one.name, two.name])
        await one.add("one-1", b"")
        await two.add("two-1", b"")
        await wait_count(ev, 2)
        # the reader blocks (block=10): add_stream takes effect without waiting for it
        await reader.add_stream(three)
        await three.add("three-1", b"")
        with anyio.fail_after(1):
            await wait_count(ev, 3)
        assert await reader.remove_stream(two.name) is True
        assert await reader.remove_stream(two.name) is False
        await two.add("two-2", b"")  # not delivered
        await one.add("one-2", b"")
        await three.add("three-2", b"")
        await wait_count(ev, 5)
        assert reader.streams == (one.name, three.name)
    assert sorted(names(ev)) == sorted(["one-1", "two-1", "three-1", "one-2", "three-2"])
    assert len({e.id + e.stream_name for e in ev}) == len(ev)
    assert {e.stream_name for e in ev if e.event_name.startswith("two")} == {two.name}


async def test_add_stream_start_defaults_to_the_readers_start(client: Client, unique: str) -> None:
    main, other = Stream(client, unique), Stream(client, unique + "-o")
    await other.add("other-old", b"")
    async with main.open_reader(start=OLDEST, block=0.05) as oldest, collecting(oldest) as ev:
        await oldest.add_stream(other)
        await wait_count(ev, 1)
    assert names(ev) == ["other-old"]
    async with main.open_reader(block=0.05) as newest, collecting(newest) as ev2:
        await newest.add_stream(other)
        await other.add("other-new", b"")
        await wait_count(ev2, 1)
        # explicit start overrides, for a stream not read yet
        third = Stream(client, unique + "-3")
        await third.add("third-old", b"")
        await newest.add_stream(third, start=OLDEST)
        await wait_count(ev2, 2)
    assert names(ev2) == ["other-new", "third-old"]


async def test_removing_every_stream_waits_for_add_stream(
    client: Client, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    stream = Stream(client, unique)
    caplog.set_level(logging.WARNING, logger="pulse_trio")
    async with stream.open_reader(block=10) as reader, collecting(reader) as ev:
        await reader.remove_stream(stream)
        assert reader.streams == ()
        await stream.add("unread", b"")
        await anyio.sleep(0.2)  # give a broken loop the chance to spin and log
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        await reader.add_stream(stream, start=OLDEST)
        with anyio.fail_after(1):
            await wait_count(ev, 1)
    assert names(ev) == ["unread"]


# --- prompt exit, back-pressure ------------------------------------------------------------


@pytest.mark.parametrize("block", [10.0, 0.0])
async def test_exit_is_prompt_while_xread_blocks(client: Client, unique: str, block: float) -> None:
    stream = Stream(client, unique)
    async with stream.open_reader(block=block) as reader:
        # wait until the XREAD really blocks in the server
        async def blocked() -> bool:
            clients = await client.client_list()
            return any(c.get("cmd") == "xread" for c in clients)

        await wait_until_async(blocked, what="the reader's XREAD blocks")
        assert reader.streams == (unique,)
        started = time.monotonic()
    assert time.monotonic() - started < 0.5


async def test_an_interrupted_xread_keeps_its_connection(client: Client, unique: str) -> None:
    """Changing the streams interrupts the blocked XREAD with CLIENT UNBLOCK: the next XREAD
    runs on the same connection (no reconnect), and leaving gives it back to the pool."""
    stream, other = Stream(client, unique), Stream(client, unique + "-o")

    async def blocked_ids() -> list[int]:
        return [int(c["id"]) for c in await client.client_list() if c.get("cmd") == "xread"]

    async with stream.open_reader(block=10) as reader, collecting(reader) as ev:
        found: list[int] = []

        async def blocked() -> bool:
            found[:] = await blocked_ids()
            return bool(found)

        await wait_until_async(blocked, what="the reader's XREAD blocks")
        [first] = found
        connects = (await client.info("stats"))["total_connections_received"]
        await reader.add_stream(other)
        await other.add("o", b"")
        await wait_count(ev, 1)
        await wait_until_async(blocked, what="the reader blocks again")
        assert found == [first]
        assert (await client.info("stats"))["total_connections_received"] == connects
        assert lent_connections(client) == 1
    assert lent_connections(client) == 0
    assert names(ev) == ["o"]


async def test_exit_is_prompt_when_cancelled_from_outside(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    with anyio.move_on_after(0.2) as scope:
        async with stream.open_reader(block=10) as reader:
            async for _ in reader:
                pass
    assert scope.cancelled_caught
    assert reader.closed


async def test_slow_consumer_slows_only_its_own_reader(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with (
        stream.open_reader(buffer_size=1, max_polled=5, block=0.05) as stuck,
        stream.open_reader(block=0.05) as fast,
        collecting(fast) as ev,
    ):
        await stream.add_many([(str(i), b"") for i in range(50)])
        await wait_count(ev, 50)
        # the stuck reader holds one event in its buffer and one in hand, no more
        assert stuck.cursors()[unique] != fast.cursors()[unique]
        first = await stuck.__anext__()
        assert first.event_name == "0"
    assert names(ev) == [str(i) for i in range(50)]


async def test_statistics(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_reader(topic="keep", buffer_size=10, block=0.05) as reader:
        assert reader.statistics() == streaming.ReaderStatistics({unique: "0-0"}, 0, 0, 0, 0)
        ids = await stream.add_many([("a", b"", "keep"), ("b", b"", "drop"), ("c", b"", "keep")])
        await wait_until(lambda: reader.cursors()[unique] == ids[-1])
        stats = reader.statistics()
        assert (stats.delivered, stats.skipped, stats.buffered, stats.retries) == (2, 1, 2, 0)
        await reader.__anext__()
        assert reader.statistics().buffered == 1
    assert reader.statistics().buffered == 0


async def test_max_polled_limits_each_read(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    await stream.add_many([(str(i), b"") for i in range(25)])
    async with (
        stream.open_reader(start=OLDEST, max_polled=10, buffer_size=100) as reader,
        collecting(reader) as ev,
    ):
        await wait_count(ev, 25)
    assert names(ev) == [str(i) for i in range(25)]


# --- wire compatibility and malformed entries ----------------------------------------------


async def test_go_shaped_entry_is_read(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_reader(block=0.05) as reader, collecting(reader) as ev:
        await client.xadd(stream.key, {"n": "go.event", "p": b"\x00\x01\xff", "t": "go-topic"})
        await client.xadd(stream.key, {"n": "go.plain", "p": b""})
        await wait_count(ev, 2)
    first = (ev[0].event_name, ev[0].payload, ev[0].topic)
    assert first == ("go.event", b"\x00\x01\xff", "go-topic")
    assert (ev[1].event_name, ev[1].payload, ev[1].topic) == ("go.plain", b"", None)


async def test_malformed_entries_are_skipped_and_logged(
    client: Client, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    stream = Stream(client, unique)
    caplog.set_level(logging.WARNING, logger="pulse_trio.streaming")
    async with stream.open_reader(block=0.05) as reader, collecting(reader) as ev:
        await stream.add("good-1", b"")
        bad_ids = [
            await client.xadd(stream.key, {"foo": "bar"}),
            await client.xadd(stream.key, {"n": "no-payload"}),
            await client.xadd(stream.key, {"n": b"\xff\xfe", "p": b""}),
        ]
        await stream.add("good-2", b"")
        await wait_count(ev, 2)
    assert names(ev) == ["good-1", "good-2"]
    logged = " ".join(r.getMessage() for r in caplog.records)
    for bad in bad_ids:
        assert bad.decode() in logged


async def test_blocks_longer_than_the_command_timeout_work(
    server_url: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The transport gives a blocking read its ``BLOCK`` plus ``command_timeout``: a block far
    longer than ``command_timeout`` is neither cut short nor taken for a dead server."""
    caplog.set_level(logging.WARNING, logger="pulse_trio")
    async with pulse_trio.connect(server_url, command_timeout=0.3) as client:
        stream = Stream(client, unique)
        async with stream.open_reader(block=5) as reader, collecting(reader) as ev:
            await anyio.sleep(0.7)  # quiet for longer than the client's command timeout
            await stream.add("late", b"")
            await wait_count(ev, 1)
            assert reader.statistics().retries == 0
    assert names(ev) == ["late"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_reader_repr_and_exports(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_reader() as reader:
        assert unique in repr(reader)
        assert "open" in repr(reader)
        assert reader.stream is stream
    assert "closed" in repr(reader)
    for name in streaming.__all__:
        assert getattr(streaming, name) is not None
    assert NEWEST is streaming.Start.NEWEST


# --- Redis Cluster -------------------------------------------------------------------------


@pytest.mark.cluster
async def test_reader_and_stream_on_a_cluster(cluster_client: Client, unique: str) -> None:
    """Streams in different hash slots are read by one reader (one XREAD loop per slot)."""
    from pulse_trio.streaming._event import id_key
    from pulse_trio.streaming._options import key_slot

    streams = [Stream(cluster_client, f"{unique}-{i}", ttl=30) for i in range(4)]
    slots = {key_slot(s.key) for s in streams}
    for s in streams:
        assert key_slot(s.key) == await cluster_client.cluster_keyslot(s.key)
    assert len(slots) > 1
    first, *others = streams
    await others[0].add("old", b"")
    async with first.open_reader(block=10) as reader, collecting(reader) as ev:
        for s in others:
            await reader.add_stream(s)
        for s in streams:
            await s.add_many([(f"{s.name}/1", b""), (f"{s.name}/2", b"", "t")])
        await wait_count(ev, 8)
        await reader.remove_stream(others[1].name)
        await others[1].add("not-read", b"")
        await first.add("last", b"")
        await wait_count(ev, 9)
    assert sorted(names(ev)) == sorted(
        [f"{s.name}/{i}" for s in streams for i in (1, 2)] + ["last"]
    )
    for s in streams:  # per-stream order
        mine = [id_key(e.id) for e in ev if e.stream_name == s.name]
        assert mine == sorted(mine)
    info = await others[0].info()
    assert info.length == 3
    assert 0 < await cluster_client.pttl(others[0].key) <= 30_000
    await others[0].destroy()
    assert (await others[0].info()).length == 0


async def test_body_errors_come_out_unwrapped(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    with pytest.raises(KeyError, match="mine"):
        async with stream.open_reader(block=10) as reader:
            raise KeyError("mine")
    assert reader.closed
