"""A replica converges to Redis's content after every kind of fault."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

import pulse_trio
from pulse_trio import rmap
from pulse_trio.rmap._protocol import Message, MessageKind, encode_message
from pulse_trio.testing import EmbeddedServer, FaultProxy

from .._util import wait_until, wait_until_async

pytestmark = pytest.mark.anyio
FAST: dict[str, Any] = {"ping_interval": 0.05, "ping_timeout": 0.5}


async def hash_content(redis: Any, name: str) -> dict[str, str]:
    raw = await redis.hgetall(f"map:{name}:content")
    return {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"=")}


async def test_gap_in_revisions_triggers_a_resync(client: Any) -> None:
    async with rmap.join(client, "gap") as m:
        await m.set_and_wait("a", "1")
        resyncs = m.statistics().resyncs
        # A write whose notification was lost (revision 2), then the next one (revision 3).
        await client.hset("map:gap:content", {"lost": "x"})
        await client.hincrby("map:gap:content", "=rev", 1)
        await client.hset("map:gap:content", {"b": "2"})
        await client.hincrby("map:gap:content", "=rev", 1)
        await client.publish(
            "map:gap:updates", encode_message(Message(MessageKind.SET, 3, "b", "2"))
        )
        await wait_until(lambda: m.statistics().resyncs > resyncs, what="resync")
        await wait_until(lambda: m.map() == {"a": "1", "lost": "x", "b": "2"})
        assert m.revision == 3
        # The subscription was up all along: re-read on it, not replaced.
        assert m.statistics().reconnects == 0
        assert m.statistics().connected


async def test_counter_reset_behind_the_replica_triggers_a_resync(client: Any) -> None:
    async with rmap.join(client, "regress") as m, rmap.join(client, "regress") as writer:
        for i in range(5):
            await m.set_and_wait(f"k{i}", "v")
        # The hash disappears (expiry, DEL, FLUSHALL): the next write gets revision 1.
        await client.delete(["map:regress:content"])
        await writer.set("fresh", "1")
        await wait_until(lambda: m.map() == {"fresh": "1"}, what="replica follows the reset")
        assert m.revision == 1
        await writer.set("more", "2")
        await wait_until(lambda: m.map() == {"fresh": "1", "more": "2"})


async def test_client_kill_pubsub_resyncs_and_converges(client: Any) -> None:
    async with rmap.join(client, "kill", **FAST) as m:
        await m.set_and_wait("a", "1")
        before = m.statistics()
        killed = await client.client_kill(type_="pubsub")
        assert killed
        # Written while the replica is disconnected: its notification is lost.
        await client.hset("map:kill:content", {"b": "2"})
        await client.hincrby("map:kill:content", "=rev", 1)
        await wait_until(lambda: m.statistics().reconnects > before.reconnects)
        await wait_until(lambda: m.map() == {"a": "1", "b": "2"}, what="converged")
        assert m.statistics().connected
        await m.set_and_wait("c", "3")  # and it keeps applying notifications
        assert m.get("c") == "3"


async def test_a_resubscription_by_the_transport_alone_resyncs(client: Any) -> None:
    # Health checks every minute: only the transport's Resubscribed item can repair it.
    async with rmap.join(client, "resub", ping_interval=60.0) as m:
        await m.set_and_wait("a", "1")
        before = m.statistics()
        # A write whose notification never reached the replica (nothing published)...
        await client.hset("map:resub:content", {"b": "2"})
        await client.hincrby("map:resub:content", "=rev", 1)
        await anyio.sleep(0.1)
        assert m.map() == {"a": "1"}
        # ...is found by the re-read that follows the subscriber connection's reconnection.
        assert await client.client_kill(type_="pubsub") == 1
        await wait_until(lambda: m.map() == {"a": "1", "b": "2"}, what="resynced")
        after = m.statistics()
        assert after.reconnects == before.reconnects + 1
        assert after.resyncs == before.resyncs + 1
        assert after.connected
        assert m.revision == 2
        await m.set_and_wait("c", "3")
        assert m.get("c") == "3"


async def test_undecodable_notification_is_logged_and_resyncs(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with rmap.join(client, "junk") as m:
        await m.set_and_wait("a", "1")
        resyncs = m.statistics().resyncs
        with caplog.at_level(logging.ERROR, logger="pulse_trio.rmap"):
            await client.publish("map:junk:updates", b"set:\xff\xff")
            await wait_until(lambda: m.statistics().resyncs > resyncs)
        assert any("undecodable notification" in r.getMessage() for r in caplog.records)
        await m.set_and_wait("b", "2")  # the map's task survived
        assert m.map() == {"a": "1", "b": "2"}


async def test_redis_restart_reads_keep_working_writes_raise_then_converges(
    own_server: EmbeddedServer,
) -> None:
    async with pulse_trio.connect(own_server.url) as redis, rmap.join(redis, "rs", **FAST) as m:
        await m.set_and_wait("a", "1")
        await own_server.stop()
        assert m.get("a") == "1"
        assert m.map() == {"a": "1"}
        with pytest.raises(pulse_trio.RedisUnavailableError, match="local reads still work"):
            await m.set("b", "2")
        await wait_until(lambda: not m.statistics().connected)
        await own_server.start()
        async with pulse_trio.connect(own_server.url) as other, rmap.join(other, "rs") as w:
            assert w.map() == {"a": "1"}  # the AOF kept it
            await w.set("b", "2")
        await wait_until(lambda: m.map() == {"a": "1", "b": "2"}, within=15)
        await wait_until(lambda: m.statistics().connected)
        assert await m.set_and_wait("c", "3") is None


async def test_expired_hash_resyncs_instead_of_ignoring_revision_one(client: Any) -> None:
    async with rmap.join(client, "exp", ttl=0.3, **FAST) as m:
        await m.set_and_wait("a", "1")
        await m.set_and_wait("b", "2")
        await wait_until_async(
            lambda: _exists(client, "map:exp:content", False), what="hash expired"
        )
        # Nothing was published, yet the replica notices the stored revision went back.
        await wait_until(lambda: len(m) == 0, what="replica emptied")
        await m.set_and_wait("c", "3")  # revision 1 again: applied, not ignored
        assert m.map() == {"c": "3"}
        assert m.revision == 1


async def _exists(client: Any, key: str, expected: bool) -> bool:
    return bool(await client.exists([key])) is expected


async def test_half_open_subscription_is_detected_and_replaced(
    server_url: str, client: Any
) -> None:
    port = int(server_url.rsplit(":", 1)[1])
    async with (
        FaultProxy(port) as proxy,
        pulse_trio.connect(proxy.url) as via_proxy,
        rmap.join(via_proxy, "halfopen", ping_interval=0.1, ping_timeout=0.3) as m,
    ):
        await m.set_and_wait("a", "1")
        reconnects = m.statistics().reconnects
        assert proxy.freeze_subscribers() == 1
        # Nothing is written: only the unanswered PING can reveal the dead subscription.
        await wait_until(lambda: m.statistics().reconnects > reconnects, what="replaced")
        async with rmap.join(client, "halfopen") as writer:
            await writer.set("b", "2")
        await wait_until(lambda: m.map() == {"a": "1", "b": "2"}, what="converged")
        await m.set_and_wait("c", "3")
        assert m.get("c") == "3"


async def test_leaving_is_prompt_while_reconnecting(own_server: EmbeddedServer) -> None:
    async with pulse_trio.connect(own_server.url) as redis:
        with anyio.fail_after(3):
            async with rmap.join(redis, "prompt", **FAST) as m:
                await own_server.stop()
                await wait_until(lambda: not m.statistics().connected)
        assert m.closed
