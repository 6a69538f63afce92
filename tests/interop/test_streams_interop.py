"""Streams shared by the Go peer and pulse_trio.streaming: same entries, ids and payloads.

Go adds -> Python readers (and sinks) receive identical events; Python adds -> a Go reader
and a Go sink receive them; entries written by either side are identical field for field.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest

from pulse_trio import streaming

from ._helpers import collecting, consuming, wait_count
from ._peer import b64, unb64

pytestmark = pytest.mark.anyio

#: (event name, payload, topic) covering binary payloads, empty parts and topics.
EVENTS: list[tuple[str, bytes, str | None]] = [
    ("user.created", b'{"id": 1}', None),
    ("binary", bytes(range(256)), "t1"),
    ("empty-payload", b"", None),
    ("", b"nameless", "t2"),
    ("unicode.é", "payload ü €".encode(), "topic/é"),
    ("big", b"\x00\xff" * 50_000, "t1"),
    ("last", b"\r\n\x00", None),
]

SINK_FLAGS = ("--grace", "1000", "--block", "100", "--start", "oldest")


def as_tuple(line: dict[str, Any]) -> tuple[str, str, bytes, str | None]:
    """(id, name, payload, topic) of an event line printed by the Go peer."""
    return line["id"], line["name"], unb64(line["payload"]), line["topic"] or None


def event_tuple(event: streaming.Event) -> tuple[str, str, bytes, str | None]:
    """(id, name, payload, topic) of a Python event."""
    return event.id, event.event_name, event.payload, event.topic


async def go_add_all(peer: Any, events: list[tuple[str, bytes, str | None]]) -> list[str]:
    """Add ``events`` through the Go peer; return their ids."""
    ids = []
    for name, payload, topic in events:
        result = await peer.call("add", name=name, payload=b64(payload), topic=topic or "")
        ids.append(result["event_id"])
    return ids


async def test_go_adds_python_readers_receive(
    client: Any, go: Callable[..., Any], unique: str
) -> None:
    stream = streaming.Stream(client, unique)
    async with (
        stream.open_reader(start=streaming.OLDEST, block=0.1) as reader,
        stream.open_reader(start=streaming.OLDEST, block=0.1, topic="t1") as filtered,
        collecting(reader) as events,
        collecting(filtered) as t1_events,
        go("stream", unique) as peer,
    ):
        ids = await go_add_all(peer, EVENTS)
        await wait_count(events, len(EVENTS))
        await wait_count(t1_events, 2)
    expected = [(i, n, p, t) for i, (n, p, t) in zip(ids, EVENTS, strict=True)]
    assert [event_tuple(e) for e in events] == expected
    assert [event_tuple(e) for e in t1_events] == [e for e in expected if e[3] == "t1"]
    assert all(e.stream_name == unique and e.sink_name is None for e in events)
    assert events[0].created_at.timestamp() * 1000 == int(ids[0].split("-")[0])


async def test_go_adds_python_sink_receives(
    client: Any, go: Callable[..., Any], unique: str
) -> None:
    stream = streaming.Stream(client, unique)
    async with (
        stream.open_sink("emails", start=streaming.OLDEST, block=0.1) as sink,
        consuming(sink) as events,
        go("stream", unique) as peer,
    ):
        ids = await go_add_all(peer, EVENTS)
        await wait_count(events, len(EVENTS))
    expected = [(i, n, p, t) for i, (n, p, t) in zip(ids, EVENTS, strict=True)]
    assert [event_tuple(e) for e in events] == expected
    assert all(e.sink_name == "emails" and e.deliveries == 1 for e in events)
    pending = await client.xpending(f"pulse:stream:{unique}", "emails")
    assert pending.pending == 0


async def test_entries_are_identical_whoever_writes(
    client: Any, go: Callable[..., Any], unique: str
) -> None:
    async with go("stream", f"{unique}-go") as peer:
        await go_add_all(peer, EVENTS)
    python_stream = streaming.Stream(client, f"{unique}-py")
    for name, payload, topic in EVENTS[:3]:
        await python_stream.add(name, payload, topic=topic)
    await python_stream.add_many([(n, p, t) if t else (n, p) for n, p, t in EVENTS[3:]])
    go_entries = await client.xrange(f"pulse:stream:{unique}-go")
    py_entries = await client.xrange(f"pulse:stream:{unique}-py")
    # Same fields in the same order (n, p, then t only when there is a topic).
    assert [e.field_values for e in py_entries] == [e.field_values for e in go_entries]
    assert list(go_entries[1].field_values) == [b"n", b"p", b"t"]
    assert list(go_entries[0].field_values) == [b"n", b"p"]


async def test_python_adds_go_reader_and_go_sink_receive(
    client: Any, go: Callable[..., Any], unique: str
) -> None:
    stream = streaming.Stream(client, unique)
    ids = [await stream.add(n, p, topic=t) for n, p, t in EVENTS[:4]]
    ids += await stream.add_many([(n, p, t) if t else (n, p) for n, p, t in EVENTS[4:]])
    expected = [(i, n, p, t) for i, (n, p, t) in zip(ids, EVENTS, strict=True)]
    async with (
        go("reader", unique, "--start", "oldest", "--block", "100") as reader,
        go("sink", unique, "emails", "--ack", *SINK_FLAGS) as sink,
    ):
        await reader.wait_count("event", len(EVENTS))
        await sink.wait_count("event", len(EVENTS))
        # And what Python adds while they run.
        late = await stream.add("late", b"\x01late", topic="t9")
        await reader.wait_count("event", len(EVENTS) + 1)
        await sink.wait_count("event", len(EVENTS) + 1)
    expected.append((late, "late", b"\x01late", "t9"))
    assert [as_tuple(line) for line in reader.of_type("event")] == expected
    assert [as_tuple(line) for line in sink.of_type("event")] == expected
    # The Go sink acked everything: nothing pending in its group.
    pending = await client.xpending(f"pulse:stream:{unique}", "emails")
    assert pending.pending == 0


async def test_readers_started_at_an_id_and_at_a_time(
    client: Any, go: Callable[..., Any], unique: str
) -> None:
    stream = streaming.Stream(client, unique)
    key = f"pulse:stream:{unique}"
    async with go("stream", unique) as producer:
        ids = await go_add_all(producer, EVENTS[:2])
        # An entry whose id is exactly <ms>-0: the id a start time resolves to.
        boundary_ms = int(ids[-1].split("-")[0]) + 5
        boundary = await client.xadd(key, {"n": "edge", "p": b"e"}, identifier=f"{boundary_ms}-0")
        assert boundary is not None
        ids.append(boundary.decode())
        ids += await go_add_all(producer, EVENTS[2:4])
    for name, payload, topic in EVENTS[4:]:
        event_id = await stream.add(name, payload, topic=topic)
        assert event_id is not None
        ids.append(event_id)
    at = datetime.fromtimestamp(boundary_ms / 1000, UTC)
    assert at.microsecond == (boundary_ms % 1000) * 1000

    # Python readers: after an id (exclusive), and at a time (every event created in that
    # millisecond or later, the <ms>-0 entry included).
    async with (
        stream.open_reader(start=ids[0], block=0.1) as after_id,
        stream.open_reader(start=at, block=0.1) as at_time,
        collecting(after_id) as py_after,
        collecting(at_time) as py_at,
    ):
        await wait_count(py_after, len(ids) - 1)
        await wait_count(py_at, len(ids) - 2)
    assert [e.id for e in py_after] == ids[1:]
    assert [e.id for e in py_at] == ids[2:]

    # Go readers over the same entries. goa.design/pulse's WithReaderStartAt(t) starts after
    # the id <ms>-0, so it skips an entry with exactly that id (pulse_trio does not).
    async with (
        go("reader", unique, "--start", ids[0], "--block", "100") as go_after,
        go("reader", unique, "--start", f"at:{boundary_ms}", "--block", "100") as go_at,
    ):
        await go_after.wait_count("event", len(ids) - 1)
        await go_at.wait_count("event", len(ids) - 3)
    assert [line["id"] for line in go_after.of_type("event")] == ids[1:]
    assert [line["id"] for line in go_at.of_type("event")] == ids[3:]
    assert all(line["created_at"] >= boundary_ms for line in go_at.of_type("event"))


async def test_go_reader_topic_filters_python_events(
    client: Any, go: Callable[..., Any], unique: str
) -> None:
    stream = streaming.Stream(client, unique)
    ids = [await stream.add(n, p, topic=t) for n, p, t in EVENTS]
    async with (
        go("reader", unique, "--start", "oldest", "--block", "100", "--topic", "t1") as exact,
        go("reader", unique, "--start", "oldest", "--block", "100", "--topic-pattern", "^t") as rx,
    ):
        await exact.wait_count("event", 2)
        await rx.wait_count("event", 4)
    assert [line["id"] for line in exact.of_type("event")] == [
        i for i, (_, _, t) in zip(ids, EVENTS, strict=True) if t == "t1"
    ]
    assert [line["id"] for line in rx.of_type("event")] == [
        i for i, (_, _, t) in zip(ids, EVENTS, strict=True) if t and t.startswith("t")
    ]


@pytest.mark.parametrize("mode", ["ttl", "sliding-ttl"])
async def test_go_sink_creating_a_stream_applies_its_ttl(
    client: Any, go: Callable[..., Any], unique: str, mode: str
) -> None:
    # goa.design/pulse's NewSink creates the stream (XGROUP CREATE ... MKSTREAM) and then
    # applies the stream's TTL to it, as Add does.
    key = f"pulse:stream:{unique}"
    async with go("sink", unique, "jobs", f"--{mode}", "5000", *SINK_FLAGS):
        assert 4000 < await client.pttl(key) <= 5000
        # A Python stream with the same TTL adding to it later: an absolute TTL keeps
        # running, a sliding one restarts.
        with anyio.fail_after(10):
            while (before := await client.pttl(key)) > 4700:
                await anyio.sleep(0.02)
        ttl, sliding = (5.0, None) if mode == "ttl" else (None, 5.0)
        await streaming.Stream(client, unique, ttl=ttl, sliding_ttl=sliding).add("e", b"")
        after = await client.pttl(key)
        assert (0 < after <= before) if mode == "ttl" else (after > before)


@pytest.mark.parametrize("mode", ["ttl", "sliding-ttl"])
async def test_python_sink_creating_a_stream_applies_its_ttl(
    client: Any, unique: str, mode: str
) -> None:
    key = f"pulse:stream:{unique}"
    ttl, sliding = (5.0, None) if mode == "ttl" else (None, 5.0)
    stream = streaming.Stream(client, unique, ttl=ttl, sliding_ttl=sliding)
    async with stream.open_sink("jobs", block=0.1):
        assert await client.exists([key]) == 1
        # As the Go sink does (test above): the stream it created carries the TTL.
        assert 4000 < await client.pttl(key) <= 5000
