"""Byte-exact wire format: what our scripts store and publish, and what Go writes."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from pulse_trio import rmap
from pulse_trio._redis import Message

from .._util import wait_until

pytestmark = pytest.mark.anyio


def le32(n: int) -> bytes:
    return n.to_bytes(4, "little")


async def published(redis: Any, channel: str, count: int, action: Any) -> list[bytes]:
    """Run ``action`` while subscribed to ``channel``; return the first ``count`` payloads."""
    out: list[bytes] = []
    async with redis.subscribe(channel) as sub:
        await action()
        with anyio.fail_after(5):
            async for item in sub:
                assert isinstance(item, Message), item  # no reconnection in this test
                out.append(item.data)
                if len(out) == count:
                    break
    return out


async def test_exact_message_bytes_for_every_operation(redis: Any) -> None:
    async with rmap.join(redis, "wire") as m:

        async def writes() -> None:
            await m.set("foo", "bar")  # rev 1
            await m.delete("foo")  # rev 2
            await m.inc("n", 7)  # rev 3
            await m.append_values("l", "a/b", "c")  # rev 4
            await m.reset()  # rev 5
            await m.set("é", "ü")  # rev 6: lengths are in bytes
            await m.destroy()  # rev 7

        messages = await published(redis, "map:wire:updates", 7, writes)
    assert messages == [
        b"set:" + le32(3) + b"foo" + le32(3) + b"bar" + le32(1) + b"1",
        b"del:" + le32(3) + b"foo" + le32(1) + b"2",
        b"set:" + le32(1) + b"n" + le32(1) + b"7" + le32(1) + b"3",
        b"set:" + le32(1) + b"l" + le32(12) + b'["a\\/b","c"]' + le32(1) + b"4",
        b"reset:5",
        b"set:" + le32(2) + "é".encode() + le32(2) + "ü".encode() + le32(1) + b"6",
        b"destroy:7",
    ]


async def test_stored_hash_layout(redis: Any) -> None:
    async with rmap.join(redis, "layout") as m:
        await m.set("k", "v")
        await m.append_values("l", "x/y")
        assert await redis.hgetall("map:layout:content") == {
            b"k": b"v",
            b"l": b'["x\\/y"]',
            b"=rev": b"2",
            b"=kind": b"set",
        }
        await m.delete("k")
        assert (await redis.hgetall("map:layout:content"))[b"=kind"] == b"del"
        await m.destroy()
        assert await redis.hgetall("map:layout:content") == {b"=rev": b"4", b"=kind": b"destroy"}


# A write made the way goa.design/pulse's Go scripts make it (KEYS[1] hash, KEYS[2] channel,
# struct.pack length prefixes), independent of our own Lua files.
GO_STYLE_SET = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local rev = tostring(redis.call('HINCRBY', KEYS[1], '=rev', 1))
redis.call('HSET', KEYS[1], '=kind', 'set')
local function p(s) return struct.pack('i', string.len(s)) .. s end
redis.call('PUBLISH', KEYS[2], 'set:' .. p(ARGV[1]) .. p(ARGV[2]) .. p(rev))
return v
"""


async def test_replica_applies_go_style_script_writes(client: Any) -> None:
    async with rmap.join(client, "gostyle") as m:
        await m.set_and_wait("mine", "1")
        await client.eval(
            GO_STYLE_SET,
            keys=["map:gostyle:content", "map:gostyle:updates"],
            args=["theirs", "2"],
        )
        await wait_until(lambda: m.map() == {"mine": "1", "theirs": "2"})
        assert m.revision == 2


async def test_replica_applies_raw_command_writes(client: Any) -> None:
    async with rmap.join(client, "raw") as m:
        # set k=v at revision 1, then delete it at revision 2, with plain commands.
        await client.hset("map:raw:content", {"k": "v"})
        await client.hincrby("map:raw:content", "=rev", 1)
        await client.hset("map:raw:content", {"=kind": "set"})
        await client.publish(
            "map:raw:updates", b"set:" + le32(1) + b"k" + le32(1) + b"v" + le32(1) + b"1"
        )
        await wait_until(lambda: m.map() == {"k": "v"})
        await client.hdel("map:raw:content", ["k"])
        await client.hincrby("map:raw:content", "=rev", 1)
        await client.publish("map:raw:updates", b"del:" + le32(1) + b"k" + le32(1) + b"2")
        await wait_until(lambda: m.revision == 2)
        assert m.map() == {}
        await client.hincrby("map:raw:content", "=rev", 1)
        await client.publish("map:raw:updates", b"reset:3")
        await wait_until(lambda: m.revision == 3)
        resyncs = m.statistics().resyncs
        await m.set_and_wait("after", "x")
        assert m.statistics().resyncs == resyncs  # no spurious resync on the way
