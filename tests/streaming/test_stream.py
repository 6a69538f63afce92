"""Stream: add, add_many, remove, destroy, info, TTLs, validation, wrong-type keys."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import pulse_trio
from pulse_trio import rmap, streaming
from pulse_trio.streaming import Stream, StreamError

from .._util import offline_client
from .conftest import wait_until, wait_until_async

pytestmark = pytest.mark.anyio

Client = Any


async def raw_entries(client: Client, stream: Stream) -> list[tuple[str, list[tuple[str, bytes]]]]:
    """Entries as (id, [(field, value), ...]) in stream order, fields in stored order."""
    return [
        (e.identifier.decode(), [(k.decode(), v) for k, v in e.field_values.items()])
        for e in await client.xrange(stream.key)
    ]


async def command_calls(client: Client, command: str) -> int:
    stats = await client.info("commandstats")
    entry = stats.get(f"cmdstat_{command}")
    return int(entry["calls"]) if entry else 0


# --- construction --------------------------------------------------------------------------


async def test_constructor_does_no_io_and_exposes_options() -> None:
    stream = Stream(offline_client(), "orders", max_len=10, sliding_ttl=1.5)
    assert stream.name == "orders"
    assert stream.key == "pulse:stream:orders"
    assert stream.max_len == 10
    assert stream.ttl is None
    assert stream.sliding_ttl == 1.5
    assert "orders" in repr(stream)


@pytest.mark.parametrize("name", ["", "a b", "a*", "x?", "[x]", "a\x00", "x" * 513, 7])
async def test_invalid_names(name: Any) -> None:
    with pytest.raises(pulse_trio.InvalidNameError):
        Stream(offline_client(), name)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_len": -1}, "max_len"),
        ({"max_len": 1.5}, "max_len"),
        ({"max_len": True}, "max_len"),
        ({"ttl": -1}, "ttl"),
        ({"ttl": 0}, "ttl"),
        ({"sliding_ttl": float("inf")}, "sliding_ttl"),
        ({"ttl": 1, "sliding_ttl": 1}, "not both"),
    ],
)
async def test_invalid_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Stream(offline_client(), "s", **options)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.add("n", "text payload"),
        lambda s: s.add("n", bytearray(b"x")),
        lambda s: s.add(1, b"x"),
        lambda s: s.add("n", b"x", topic=3),
        lambda s: s.add_many([("n", "text")]),
        lambda s: s.add_many([("n",)]),
        lambda s: s.add_many(["n"]),
        lambda s: s.add_many([("n", b"x", "t", "extra")]),
    ],
)
async def test_bad_events_raise_type_error_before_io(call: Any) -> None:
    with pytest.raises(TypeError):
        await call(Stream(offline_client(), "s"))


async def test_remove_rejects_malformed_ids_before_io() -> None:
    with pytest.raises(ValueError, match="invalid event id"):
        await Stream(offline_client(), "s").remove("1-2", "nope")
    assert await Stream(offline_client(), "s").remove() == 0


# --- add / add_many ------------------------------------------------------------------------


async def test_add_writes_pulse_wire_format(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    id1 = await stream.add("user.created", b"\x00payload\xff", topic="eu")
    id2 = await stream.add("user.deleted", b"", topic="")
    id3 = await stream.add("", b"p")
    assert id1 is not None
    assert id2 is not None
    assert id3 is not None
    assert await raw_entries(client, stream) == [
        (id1, [("n", b"user.created"), ("p", b"\x00payload\xff"), ("t", b"eu")]),
        (id2, [("n", b"user.deleted"), ("p", b"")]),
        (id3, [("n", b""), ("p", b"p")]),
    ]


async def test_add_only_if_exists(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    assert await stream.add("e", b"", only_if_exists=True) is None
    assert await client.exists([stream.key]) == 0
    await stream.add("first", b"")
    eid = await stream.add("second", b"", only_if_exists=True)
    assert eid is not None
    assert [e[0] for e in await raw_entries(client, stream)][-1] == eid


async def test_add_many_one_round_trip_ids_in_order(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    assert await stream.add_many([]) == []
    assert await stream.add_many(iter([])) == []
    await Stream(client, unique + "-warm").add_many([("warm", b"")])  # script loaded
    before = await command_calls(client, "evalsha") + await command_calls(client, "eval")
    batch: list[streaming.EventSpec] = [("a", b"1"), ("b", b"2", "topic-b"), ("c", b"3", None)]
    ids = await stream.add_many(batch + [("x", b"")] * 97)
    after = await command_calls(client, "evalsha") + await command_calls(client, "eval")
    assert after - before == 1
    assert len(ids) == 100
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    entries = await raw_entries(client, stream)
    assert [e[0] for e in entries] == ids
    assert entries[0][1] == [("n", b"a"), ("p", b"1")]
    assert entries[1][1] == [("n", b"b"), ("p", b"2"), ("t", b"topic-b")]
    assert entries[2][1] == [("n", b"c"), ("p", b"3")]


async def test_add_many_validates_everything_before_writing(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    with pytest.raises(TypeError):
        await stream.add_many([("ok", b""), ("bad", "str")])  # type: ignore[list-item]
    assert await client.exists([stream.key]) == 0


async def test_max_len_trims_approximately(client: Client, unique: str) -> None:
    trimmed = Stream(client, unique, max_len=100)
    for _ in range(10):
        await trimmed.add_many([("e", b"")] * 100)
    await trimmed.add("e", b"")
    length = await client.xlen(trimmed.key)
    assert 100 <= length < 300
    untrimmed = Stream(client, unique + "-all", max_len=0)
    for _ in range(3):
        await untrimmed.add_many([("e", b"")] * 500)
    await untrimmed.add("e", b"")
    assert await client.xlen(untrimmed.key) == 1501


# --- TTLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["add", "add_many"])
async def test_absolute_ttl_is_set_once(client: Client, unique: str, method: str) -> None:
    stream = Stream(client, unique, ttl=5)

    async def add() -> None:
        if method == "add":
            await stream.add("e", b"")
        else:
            await stream.add_many([("e", b""), ("f", b"")])

    await add()
    assert 4000 < await client.pttl(stream.key) <= 5000
    await client.pexpire(stream.key, 60_000)
    await add()
    assert await client.pttl(stream.key) > 50_000  # not reset by later adds


@pytest.mark.parametrize("method", ["add", "add_many"])
async def test_sliding_ttl_is_refreshed(client: Client, unique: str, method: str) -> None:
    stream = Stream(client, unique, sliding_ttl=5)

    async def add() -> None:
        if method == "add":
            await stream.add("e", b"")
        else:
            await stream.add_many([("e", b"")])

    await add()
    assert 4000 < await client.pttl(stream.key) <= 5000
    await client.pexpire(stream.key, 60_000)
    await add()
    assert 4000 < await client.pttl(stream.key) <= 5000


async def test_no_ttl_by_default_and_ttl_expires(client: Client, unique: str) -> None:
    plain = Stream(client, unique)
    await plain.add("e", b"")
    await plain.add_many([("e", b"")])
    assert await client.pttl(plain.key) == -1
    short = Stream(client, unique + "-short", ttl=0.1)
    await short.add("e", b"")

    async def gone() -> bool:
        return bool(await client.exists([short.key]) == 0)

    await wait_until_async(gone, within=3, what="the stream expires")


async def test_ttl_add_only_if_exists_missing(client: Client, unique: str) -> None:
    stream = Stream(client, unique, ttl=5)
    assert await stream.add("e", b"", only_if_exists=True) is None
    assert await client.exists([stream.key]) == 0
    await stream.add("e", b"")
    assert await stream.add("e", b"", only_if_exists=True) is not None


# --- remove, destroy, info -----------------------------------------------------------------


async def test_remove(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    ids = await stream.add_many([("a", b""), ("b", b""), ("c", b"")])
    assert await stream.remove(ids[0], ids[2], "1-1") == 2
    assert [e[0] for e in await raw_entries(client, stream)] == [ids[1]]


async def test_destroy_deletes_key_and_groups(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    await stream.add("e", b"")
    await client.xgroup_create(stream.key, "g", "0")
    await stream.destroy()
    assert await client.exists([stream.key]) == 0
    assert await client.exists([f"map:stream:{unique}:sinks:content"]) == 0
    await stream.destroy()  # destroying a missing stream is fine
    assert (await stream.info()).sinks == ()


async def test_destroy_tombstones_the_sink_membership_map(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    await stream.add("e", b"")
    membership = f"stream:{unique}:sinks"
    async with rmap.join(client, membership) as members, members.subscribe() as changes:
        await members.set_and_wait("emails", '["consumer-1"]')
        revision = members.revision
        await stream.destroy()
        with anyio.fail_after(5):
            kind = await changes.__anext__()
            while kind is not rmap.EventKind.RESET:
                kind = await changes.__anext__()
        await wait_until(lambda: members.get("emails") is None)
    content = await client.hgetall(f"map:{membership}:content")
    assert content[b"=kind"] == b"destroy"
    assert int(content[b"=rev"]) > revision
    assert set(content) == {b"=rev", b"=kind"}
    assert await client.exists([stream.key]) == 0


async def test_info(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    missing = await stream.info()
    assert missing == streaming.StreamInfo(unique, 0, None, None, "0-0", ())
    assert not missing.exists
    ids = await stream.add_many([(str(i), b"") for i in range(5)])
    await client.xgroup_create(stream.key, "late", "$")
    await client.xgroup_create(stream.key, "early", "0")
    await client.xreadgroup("early", "c1", streams={stream.key: ">"}, count=2)
    await client.xreadgroup("early", "c2", streams={stream.key: ">"}, count=1)
    await client.xack(stream.key, "early", [ids[0]])
    info = await stream.info()
    assert info.exists
    assert (info.length, info.first_id, info.last_id, info.last_generated_id) == (
        5,
        ids[0],
        ids[-1],
        ids[-1],
    )
    early, late = info.sinks
    assert early == streaming.SinkInfo("early", 2, 2, ids[2], 2)
    assert late == streaming.SinkInfo("late", 0, 0, ids[-1], 0)
    await stream.remove(ids[-1])
    info = await stream.info()
    assert (info.length, info.last_id, info.last_generated_id) == (4, ids[-2], ids[-1])


async def test_wrong_type_key_raises_stream_error(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    await client.set(stream.key, "not a stream")
    for call in (
        stream.add("e", b""),
        stream.add_many([("e", b"")]),
        stream.remove("1-1"),
        stream.info(),
        Stream(client, unique, ttl=5).add("e", b""),
    ):
        with pytest.raises(StreamError, match=f"pulse:stream:{unique}") as caught:
            await call
        assert caught.value.key == stream.key
        assert caught.value.stream == unique
        assert isinstance(caught.value, pulse_trio.PulseError)
    with pytest.raises(StreamError):
        async with stream.open_reader():
            pass


def test_open_sink_and_open_reader_signatures_match_the_spec() -> None:
    import inspect

    sink = inspect.signature(Stream.open_sink).parameters
    assert list(sink) == [
        "self",
        "name",
        "start",
        "block",
        "max_polled",
        "buffer_size",
        "ack_grace_period",
        "no_ack",
        "topic",
        "topic_pattern",
        "max_deliveries",
        "dead_letter",
    ]
    assert sink["start"].default is streaming.NEWEST
    assert (sink["block"].default, sink["ack_grace_period"].default) == (5.0, 20.0)
    assert (sink["max_deliveries"].default, sink["dead_letter"].default) == (None, None)
    reader = inspect.signature(Stream.open_reader).parameters
    assert {k: v.default for k, v in reader.items() if k != "self"} == {
        "start": streaming.NEWEST,
        "block": 5.0,
        "max_polled": 1000,
        "buffer_size": 1000,
        "topic": None,
        "topic_pattern": None,
    }


async def test_open_sink_delegates_to_the_sink_module(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_sink("workers", start=streaming.OLDEST, block=0.05) as sink:
        assert isinstance(sink, streaming.Sink)
        await stream.add("job", b"1")
        with anyio.fail_after(5):
            event = await sink.__anext__()
        assert (event.event_name, event.sink_name) == ("job", "workers")
        await sink.ack(event)
    assert [s.name for s in (await stream.info()).sinks] == ["workers"]
