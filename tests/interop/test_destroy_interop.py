"""Stream.destroy from one side, seen by the other.

Destroy deletes the stream key (entries and consumer groups) and tombstones the sink
membership map ``stream:<name>:sinks`` with the replicated-map destroy protocol, so live
sinks of either language hear about it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pulse_trio import rmap, streaming

from .._util import recording
from ._helpers import collecting, consuming, wait_count, wait_until
from ._peer import b64, unb64

pytestmark = pytest.mark.anyio

GO_SINK_FLAGS = ("--grace", "1000", "--block", "100", "--start", "oldest")


async def test_python_destroy_seen_by_go_reader_and_sink(
    client: Any, go: Callable[..., Any], unique: str
) -> None:
    stream = streaming.Stream(client, unique)
    key = f"pulse:stream:{unique}"
    async with (
        go("reader", unique, "--start", "oldest", "--block", "100") as reader,
        go("sink", unique, "audit", "--ack", "--watch-membership", *GO_SINK_FLAGS) as sink,
    ):
        before = [await stream.add("e", bytes([i])) for i in range(3)]
        await reader.wait_count("event", 3)
        await sink.wait_count("event", 3)
        rev_before = int(await client.hget(f"map:stream:{unique}:sinks:content", "=rev"))

        await stream.destroy()

        # A Go replica of the membership map applies the destroy (every member gone)...
        destroyed = await sink.wait_line(
            lambda line: line.get("type") == "membership" and line["event"] == "reset"
        )
        assert destroyed["content"] == {}
        assert destroyed["rev"] == rev_before + 1
        # ...and the Go sink's group is gone: its idle check meets NOGROUP (v1.6.5 then
        # keeps retrying; it never recreates the group, so nothing brings the key back).
        await sink.wait_line(
            lambda line: (
                line.get("type") == "log" and line["level"] == "error" and "NOGROUP" in line["msg"]
            ),
            what="the Go sink's NOGROUP",
        )
        assert await client.exists([key]) == 0
        assert await client.hgetall(f"map:stream:{unique}:sinks:content") == {
            b"=rev": str(rev_before + 1).encode(),
            b"=kind": b"destroy",
        }
        # The Go reader keeps reading the re-created stream after its last id.
        after = await stream.add("after", b"new life")
        line = await reader.wait_line(lambda line: line.get("id") == after)
        assert (line["name"], unb64(line["payload"])) == ("after", b"new life")
        # The Go sink (v1.6.5) does not recreate its group: it will not get the new event,
        # where a Python sink recreates the group and goes on (the test below).
        groups = await client.xinfo_groups(key)
        assert not groups, groups
    assert [e["id"] for e in reader.of_type("event")] == [*before, after]
    assert [e["id"] for e in sink.of_type("event")] == before


async def test_go_destroy_seen_by_python_reader_sink_and_replica(
    client: Any, go: Callable[..., Any], unique: str
) -> None:
    stream = streaming.Stream(client, unique)
    async with (
        stream.open_reader(start=streaming.OLDEST, block=0.1) as reader,
        collecting(reader) as read,
        stream.open_sink("audit", start=streaming.OLDEST, block=0.1, ack_grace_period=1.0) as sink,
        consuming(sink) as sunk,
        rmap.join(client, f"stream:{unique}:sinks") as members,
        recording(members) as kinds,
        go("stream", unique) as peer,
    ):
        for i in range(3):
            await peer.call("add", name="e", payload=b64(bytes([i])))
        await wait_count(read, 3)
        await wait_count(sunk, 3)
        assert members.get_values("audit") == [sink.consumer]

        await peer.call("destroy")

        # The Python replica of the membership map sees the destroy as a RESET.
        await wait_until(lambda: rmap.EventKind.RESET in kinds, what="a RESET notification")
        # The Python sink notices the lost group, recreates it, and registers itself again.
        await wait_until(
            lambda: members.get_values("audit") == [sink.consumer],
            within=10,
            what="the Python sink registered again",
        )
        # Events added by Go after the destroy reach the Python reader and sink.
        result = await peer.call("add", name="after", payload=b64(b"new life"))
        await wait_count(read, 4, within=10)
        await wait_count(sunk, 4, within=10)
    assert read[-1].id == sunk[-1].id == result["event_id"]
    assert (read[-1].event_name, read[-1].payload) == ("after", b"new life")
    assert [e.payload for e in sunk] == [b"\x00", b"\x01", b"\x02", b"new life"]
