"""One sink, instances in Go and in Python: the events are split, never lost, never doubled.

The Go instance is goa.design/pulse v1.6.5's own Sink (keep-alive every grace period, stale
after two, XAUTOCLAIM under its lease every 500 ms, consumers without keep-alive deleted at
once), so these tests also check that the Python instance never looks dead to it, and that
the Python instance never deletes a live Go consumer.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from pulse_trio import streaming

from ._helpers import consumer_names, consuming, wait_until
from ._peer import GoProcess, Line, b64, json_process, unb64

pytestmark = pytest.mark.anyio

#: Ack grace period of both sides. A Go instance deletes a consumer whose keep-alive is
#: older than 2 x grace by its own clock, so short periods also check that Python
#: keep-alives are accurate (test_python_keepalive_is_fresh_by_the_go_clock).
GRACE = 0.5
GO_SINK_FLAGS = (
    "--grace",
    str(int(GRACE * 1000)),
    "--block",
    "100",
    "--start",
    "oldest",
)


def py_sink(stream: streaming.Stream, name: str) -> Any:
    """A Python instance of sink ``name`` with the tests' short grace period."""
    return stream.open_sink(name, start=streaming.OLDEST, block=0.1, ack_grace_period=GRACE)


@contextlib.asynccontextmanager
async def watching_consumers(
    client: Any, stream: str, sink: str, expected: set[str], peer: GoProcess
) -> AsyncIterator[list[set[str]]]:
    """Check every 20 ms, while the block runs, that every ``expected`` consumer exists."""
    seen: list[set[str]] = []

    async def watch() -> None:
        while True:
            names = await consumer_names(client, stream, sink)
            seen.append(names)
            missing = expected - names
            assert not missing, (
                f"live consumers deleted: {missing} (group has {names})\n{peer.diagnostics()}"
            )
            await anyio.sleep(0.02)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        yield seen
        tg.cancel_scope.cancel()


def go_events(peer: GoProcess) -> dict[str, bytes]:
    """Event id -> payload of every event the Go sink printed."""
    return {line["id"]: unb64(line["payload"]) for line in peer.of_type("event")}


def go_logs(peer: GoProcess, msg: str) -> list[Line]:
    """The entries the Go library logged with message ``msg``."""
    return peer.matching(lambda line: line.get("type") == "log" and line["msg"] == msg)


#: What the Go library logs when it deletes a consumer of the group (goa.design/pulse v1.6.5).
DELETIONS = ("cleaning up stale consumer", "cleaning up consumer with no keep-alive")


def go_deleted_consumers(peer: GoProcess) -> list[str]:
    """The consumers the Go instance deleted from the group, in order."""
    return [
        line["fields"]["consumer"]
        for line in peer.matching(
            lambda line: line.get("type") == "log" and line["msg"] in DELETIONS
        )
    ]


async def go_claims_then_deletes(
    go_sink: Any, ids: list[str | None], payloads: list[bytes], py_consumer: str
) -> None:
    """The Go instance receives exactly ``ids`` by claiming them (XAUTOCLAIM), then deletes
    the Python consumer as stale."""
    await go_sink.wait_count("event", len(ids), within=5 * GRACE + 5)
    got = go_sink.of_type("event")
    # Claim rounds may take them in more than one batch (their idle times differ under
    # load), so only the set is fixed, each id once.
    assert sorted((line["id"], unb64(line["payload"])) for line in got) == sorted(
        zip(ids, payloads, strict=True)
    )
    assert all(line["consumer"] == go_sink.of_type("ready")[0]["consumer"] for line in got)
    # The library logs each XAUTOCLAIM batch: they all came from claims, not from new reads.
    claimed = go_logs(go_sink, "claimed")
    assert sum(int(line["fields"]["messages"]) for line in claimed) >= len(ids)
    await go_sink.wait_for(
        lambda _: py_consumer in go_deleted_consumers(go_sink),
        within=5 * GRACE + 5,
        what="the Python consumer deleted as stale",
    )
    assert go_logs(go_sink, "cleaning up stale consumer")[-1]["fields"]["consumer"] == py_consumer


async def test_mixed_sink_splits_events_without_loss_or_duplicates(
    client: Any, go: Callable[..., Any], unique: str
) -> None:
    stream = streaming.Stream(client, unique)
    count = 60
    async with (
        go("sink", unique, "mixed", "--ack", *GO_SINK_FLAGS) as go_sink,
        py_sink(stream, "mixed") as sink,
        consuming(sink) as py_events,
        go("stream", unique) as producer,
    ):
        go_consumer = go_sink.of_type("ready")[0]["consumer"]
        async with watching_consumers(
            client, unique, "mixed", {go_consumer, sink.consumer}, go_sink
        ):
            sent: dict[str, bytes] = {}
            for i in range(count):
                payload = f"event {i}".encode() + bytes([i])
                if i % 2:
                    event_id = await stream.add("tick", payload)
                    assert event_id is not None
                else:
                    result = await producer.call("add", name="tick", payload=b64(payload))
                    event_id = result["event_id"]
                sent[event_id] = payload
                await anyio.sleep(0.005)
            await wait_until(
                lambda: len(py_events) + len(go_sink.of_type("event")) >= count,
                what="every event delivered once",
            )
            # Two grace periods more: stale checks and reclaims run on both sides, nothing is
            # delivered again and no live consumer is deleted.
            await anyio.sleep(2 * GRACE)
    from_go = go_events(go_sink)
    from_py = {e.id: e.payload for e in py_events}
    assert len(from_go) == len(go_sink.of_type("event")), "Go got an event twice"
    assert len(from_py) == len(py_events), "Python got an event twice"
    assert not from_go.keys() & from_py.keys(), "an event reached both instances"
    assert {**from_go, **from_py} == sent
    assert from_go, "the Go instance got no event"
    assert from_py, "the Python instance got no event"
    assert all(e.sink_name == "mixed" and e.deliveries == 1 for e in py_events)
    assert not go_deleted_consumers(go_sink)
    pending = await client.xpending(f"pulse:stream:{unique}", "mixed")
    assert pending.pending == 0


async def test_killed_go_instance_entries_reach_the_python_instance(
    client: Any, go: Callable[..., Any], unique: str
) -> None:
    stream = streaming.Stream(client, unique)
    async with go("sink", unique, "jobs", "--no-ack", *GO_SINK_FLAGS) as go_sink:
        go_consumer = go_sink.of_type("ready")[0]["consumer"]
        ids = [await stream.add("job", f"job {i}".encode()) for i in range(5)]
        await go_sink.wait_count("event", 5)
        async with py_sink(stream, "jobs") as sink, consuming(sink) as py_events:
            # Both alive: the Python instance leaves the Go consumer (and its entries) alone.
            async with watching_consumers(
                client, unique, "jobs", {go_consumer, sink.consumer}, go_sink
            ):
                await anyio.sleep(GRACE / 4)
            # The Go instance dies holding all five (none reclaimed yet: < one grace period).
            held = await client.xpending(
                f"pulse:stream:{unique}",
                "jobs",
                start="-",
                end="+",
                count=10,
                consumer=go_consumer,
            )
            assert [e.identifier.decode() for e in held] == ids
            await go_sink.kill()
            # After the grace period the Python instance claims what the Go one held.
            await wait_until(lambda: len(py_events) >= 5, within=5 * GRACE + 5, what="claims")
            # Each once (claim rounds may take them in more than one batch, in any order).
            assert sorted((e.id, e.payload) for e in py_events) == sorted(
                zip(ids, [f"job {i}".encode() for i in range(5)], strict=True)
            )
            # Delivered to the Go instance first (more than once if it reclaimed them).
            assert all(e.deliveries >= 2 for e in py_events)
            # Then, nothing pending on it any more, the dead Go consumer is deleted and
            # forgotten by the membership and keep-alive maps.
            await wait_until_async(
                lambda: consumer_names(client, unique, "jobs"),
                lambda names: names == {sink.consumer},
                what="the dead Go consumer deleted",
            )
            members = await client.hget(f"map:stream:{unique}:sinks:content", "jobs")
            assert go_consumer.encode() not in members
            assert sink.consumer.encode() in members
            await wait_until_async(
                lambda: client.hgetall("map:sink:jobs:keepalive:content"),
                lambda ka: go_consumer.encode() not in ka,
                what="the Go keep-alive removed",
            )
    pending = await client.xpending(f"pulse:stream:{unique}", "jobs")
    assert pending.pending == 0


async def test_python_instance_leaving_unacked_entries_reach_the_go_instance(
    client: Any, go: Callable[..., Any], unique: str
) -> None:
    stream = streaming.Stream(client, unique)
    async with py_sink(stream, "jobs") as sink, consuming(sink, ack=False) as py_events:
        py_consumer = sink.consumer
        ids = [await stream.add("job", bytes([i]) * 3) for i in range(5)]
        await wait_until(lambda: len(py_events) == 5, what="Python got the events")
    # The Python instance left holding 5 unacked entries: its consumer stays, with them.
    assert py_consumer in await consumer_names(client, unique, "jobs")
    async with go("sink", unique, "jobs", "--ack", *GO_SINK_FLAGS) as go_sink:
        # The Go instance claims them, then deletes the Python consumer as stale.
        await go_claims_then_deletes(go_sink, ids, [bytes([i]) * 3 for i in range(5)], py_consumer)
    pending = await client.xpending(f"pulse:stream:{unique}", "jobs")
    assert pending.pending == 0


async def wait_until_async(
    fetch: Callable[[], Any], check: Callable[[Any], bool], *, what: str, within: float = 10.0
) -> None:
    """Poll ``await fetch()`` until ``check`` holds on its result."""
    with anyio.move_on_after(within):
        while True:
            value = await fetch()
            if check(value):
                return
            await anyio.sleep(0.02)
    raise AssertionError(f"timed out after {within} s waiting for {what} (last: {value!r})")


async def test_python_keepalive_is_fresh_by_the_go_clock(client: Any, unique: str) -> None:
    # A Go instance judges a keep-alive by its local clock (same host here): a value just
    # written must be about "now". (coredis 6.9's Redis.time() drops the sub-second part,
    # which once made Python keep-alives up to 1 s old and got live Python consumers deleted
    # by Go instances with short grace periods.)
    stream = streaming.Stream(client, unique)
    key = "map:sink:ka:keepalive:content"
    async with stream.open_sink("ka", ack_grace_period=0.3, block=0.1) as sink:
        ages = []
        previous = None
        for _ in range(5):
            with anyio.fail_after(5):
                while (value := await client.hget(key, sink.consumer)) == previous:
                    await anyio.sleep(0.002)
            ages.append((time.time_ns() - int(value)) / 1e9)
            previous = value
    assert max(ages) < 0.2, f"keep-alive ages when written (s): {ages}"


async def test_killed_python_process_entries_reach_the_go_instance(
    client: Any, go: Callable[..., Any], server_url: str, unique: str
) -> None:
    stream = streaming.Stream(client, unique)
    script = Path(__file__).with_name("_python_sink.py")
    command = [sys.executable, str(script), server_url, unique, "jobs", str(GRACE)]
    async with json_process(command) as py_proc:
        py_consumer = py_proc.of_type("ready")[0]["consumer"]
        ids = [await stream.add("job", bytes([i])) for i in range(5)]
        await py_proc.wait_count("event", 5)  # held, never acked
        async with go("sink", unique, "jobs", "--ack", *GO_SINK_FLAGS) as go_sink:
            go_consumer = go_sink.of_type("ready")[0]["consumer"]
            # Both alive: the Go instance leaves the Python consumer alone.
            async with watching_consumers(
                client, unique, "jobs", {py_consumer, go_consumer}, go_sink
            ):
                await anyio.sleep(GRACE / 4)
            await py_proc.kill()  # a crash: no cleanup of any kind
            # The Go instance claims the crashed instance's entries after the grace period...
            # ...then deletes its consumer, nothing being pending on it any more.
            await go_claims_then_deletes(go_sink, ids, [bytes([i]) for i in range(5)], py_consumer)
    pending = await client.xpending(f"pulse:stream:{unique}", "jobs")
    assert pending.pending == 0
