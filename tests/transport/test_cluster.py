"""Redis Cluster: slots and routing, MOVED/ASK during a slot migration, a master failover."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from pulse_trio import EmbeddedCluster, RedisUnavailableError
from pulse_trio._redis import Client, ResponseError, open_client
from pulse_trio._redis._cluster import REFRESH_INTERVAL, Cluster, command_key, key_slot
from pulse_trio._redis._settings import Address

from .._slots import migration_of
from .._util import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]


def test_key_slot_matches_redis() -> None:
    assert key_slot("123456789") == 0x31C3 % 16384  # the CRC16/XMODEM check value
    assert key_slot("foo") == 12182
    assert key_slot(b"{user1000}.following") == key_slot("{user1000}.followers")
    assert key_slot("{}.x") != key_slot("{}.y")  # an empty tag is no tag
    assert key_slot("a{b}c") == key_slot("b")


def test_command_key_positions() -> None:
    assert command_key(("GET", "k")) == "k"
    assert command_key((b"hset", b"h", b"f", b"v")) == b"h"
    assert command_key(("EVALSHA", "sha", 2, "k1", "k2", "a")) == "k1"
    assert command_key(("EVAL", "return 1", 0, "a")) is None
    assert command_key(("XREADGROUP", "GROUP", "g", "c", "BLOCK", 5, "STREAMS", "s", ">")) == "s"
    assert command_key(("PING",)) is None
    assert command_key(("PUBLISH", "ch", "m")) is None


def _cluster(client: Client) -> Cluster:
    topology = client._topology
    assert isinstance(topology, Cluster)
    return topology


@pytest.fixture
async def cclient(cluster_url: str) -> Any:
    async with open_client(cluster_url) as client:
        yield client


async def test_commands_and_scripts_reach_every_slot_owner(cclient: Client, unique: str) -> None:
    cluster = _cluster(cclient)
    keys = [f"{unique}:{i}" for i in range(60)]
    owners = {cluster.node_for(k).address for k in keys}
    assert len(owners) == 3
    for key in keys:
        await cclient.execute("SET", key, key)
    assert [await cclient.execute("GET", k) for k in keys] == [k.encode() for k in keys]
    for key in keys:
        reply = await cclient.execute_script(
            "return redis.call('GET', KEYS[1])", keys=[key], args=[]
        )
        assert reply == key.encode()
    assert cluster.refreshes == 1  # routed right the first time: no MOVED
    counts = {}
    for address in owners:
        assert address is not None
        async with open_client(f"redis://{address.host}:{address.port}") as direct:
            counts[address] = sum(
                [
                    await direct.execute("EXISTS", k)
                    for k in keys
                    if cluster.node_for(k).address == address
                ]
            )
    assert sum(counts.values()) == len(keys)
    await cclient.execute("DEL", *[k for k in keys[:1]])


async def _node_id(address: Address) -> bytes:
    async with open_client(f"redis://{address.host}:{address.port}") as direct:
        node_id: bytes = await direct.execute("CLUSTER", "MYID")
        return node_id


async def _setslot_everywhere(addresses: list[Address], slot: int, node_id: bytes) -> None:
    for address in addresses:
        async with open_client(f"redis://{address.host}:{address.port}") as direct:
            await direct.execute("CLUSTER", "SETSLOT", slot, "NODE", node_id)


async def _migrate(
    source: Address, target: Address, slot: int, keys: list[str], others: list[Address]
) -> None:
    source_id, target_id = await _node_id(source), await _node_id(target)
    async with (
        open_client(f"redis://{source.host}:{source.port}") as src,
        open_client(f"redis://{target.host}:{target.port}") as dst,
    ):
        await dst.execute("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        await src.execute("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        if keys:
            await src.execute("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
    await _setslot_everywhere([target, source, *others], slot, target_id)


async def test_moved_and_ask_during_a_slot_migration(cclient: Client, unique: str) -> None:
    cluster = _cluster(cclient)
    old_key, new_key = f"{{{unique}}}:old", f"{{{unique}}}:new"
    slot, source, target, others = migration_of(cluster, old_key)
    await cclient.execute("SET", old_key, "v1")
    source_id, target_id = await _node_id(source), await _node_id(target)
    async with (
        open_client(f"redis://{source.host}:{source.port}") as src,
        open_client(f"redis://{target.host}:{target.port}") as dst,
    ):
        await dst.execute("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        await src.execute("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        try:
            # Not on the source any more: ASK -> ASKING + SET on the target.
            assert await cclient.execute("SET", new_key, "v2") == b"OK"
            async with dst.blocking() as conn:  # a connection of its own for ASKING
                await conn.execute("ASKING")
                assert await conn.execute("EXISTS", new_key) == 1
            with pytest.raises(ResponseError) as info:  # not on the source: it says ASK
                await src.execute("EXISTS", new_key)
            assert info.value.code == "ASK"
            assert cluster._slots[slot] == source  # ASK does not change the map
            # Still on the source: served there.
            assert await cclient.execute("GET", old_key) == b"v1"
            await src.execute("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", old_key)
        finally:
            await _setslot_everywhere([target, source, *others], slot, target_id)
    # A blocking connection to the old owner gets MOVED, which fixes the map for the next.
    stream = f"{{{unique}}}:stream"
    async with cclient.blocking(key=stream) as conn:
        with pytest.raises(ResponseError) as moved:
            await conn.execute("XREAD", "BLOCK", 10, "STREAMS", stream, "$")
    assert moved.value.code == "MOVED"
    assert cluster._slots[slot] == target
    async with cclient.blocking(key=stream) as conn:
        assert await conn.execute("XREAD", "BLOCK", 10, "STREAMS", stream, "$") is None
    cluster._slots[slot] = source  # forget, to check that ordinary commands follow MOVED too
    # The client's map says "source" again: MOVED sends it to the target and fixes the map.
    assert await cclient.execute("GET", old_key) == b"v1"
    assert await cclient.execute("GET", new_key) == b"v2"
    assert cluster._slots[slot] == target
    # Put the slot back for the other tests of the session.
    await _migrate(target, source, slot, [old_key, new_key], others)
    assert await cclient.execute("GET", old_key) == b"v1"
    assert cluster._slots[slot] == source
    await cclient.execute("DEL", old_key, new_key)


async def test_tryagain_is_retried_until_the_migration_ends(
    cclient: Client, cluster_url: str, unique: str
) -> None:
    """A multi-key command on a migrating slot whose keys are partly missing gets TRYAGAIN
    (Redis ran nothing): the client sends it again, with growing pauses, until the migration
    ends, then returns its reply; for at most ``command_timeout``, then TRYAGAIN is raised."""
    cluster = _cluster(cclient)
    here, missing = f"{{{unique}}}:here", f"{{{unique}}}:missing"
    slot, source, target, others = migration_of(cluster, here)
    await cclient.execute("SET", here, "v")
    source_id, target_id = await _node_id(source), await _node_id(target)
    replies: list[Any] = []
    async with (
        open_client(f"redis://{source.host}:{source.port}") as src,
        open_client(f"redis://{target.host}:{target.port}") as dst,
        open_client(cluster_url, command_timeout=0.3) as impatient,
    ):
        await dst.execute("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        await src.execute("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        migrated = False
        try:
            started = anyio.current_time()
            with pytest.raises(ResponseError) as info:
                await impatient.execute("MGET", here, missing)
            assert info.value.code == "TRYAGAIN"
            assert anyio.current_time() - started >= 0.3
            assert _cluster(impatient).tryagains >= 2

            async def mget() -> None:
                replies.append(await cclient.execute("MGET", here, missing))

            async with anyio.create_task_group() as tg:
                tg.start_soon(mget)
                # More tries than the redirections a command may follow: the migration, not
                # a count, ends the retries.
                await wait_until(lambda: cluster.tryagains >= 7, within=10)
                assert replies == []
                await src.execute("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", here)
                await _setslot_everywhere([target, source, *others], slot, target_id)
                migrated = True
        finally:
            if not migrated:
                await _setslot_everywhere([target, source, *others], slot, target_id)
    assert replies == [[b"v", None]]
    # Put the slot back for the other tests of the session.
    await _migrate(target, source, slot, [here], others)
    assert await cclient.execute("GET", here) == b"v"
    assert cluster._slots[slot] == source
    await cclient.execute("DEL", here)


async def test_a_refresh_scheduled_as_the_client_closes_ends_quietly(cluster_url: str) -> None:
    """A MOVED just before the block exits schedules a refresh that finds the nodes closed:
    it ends without an error (the client's tasks never raise)."""
    async with open_client(cluster_url) as client:
        cluster = _cluster(client)
        await cluster.aclose()  # what the block's exit does before the task runs
        cluster._last_refresh -= REFRESH_INTERVAL  # not skipped as too soon after the start
        await cluster._refresh_quietly()
        assert cluster.refreshes == 1


async def test_master_failover_is_followed(unique: str) -> None:
    async with (
        EmbeddedCluster(masters=3, replicas=1) as embedded,
        open_client(embedded.url, command_timeout=2.0, connect_timeout=1.0) as client,
    ):
        cluster = _cluster(client)
        key = f"{unique}:k"
        await client.execute("SET", key, "before")
        assert await client.execute("WAIT", 1, 2000, key=key) == 1  # on the replica too
        owner = cluster.node_for(key).address
        assert owner is not None
        victim = next(n for n in embedded.nodes if n.port == owner.port)
        await victim.kill()
        with anyio.fail_after(30):
            while True:
                try:
                    value = await client.execute("GET", key)
                    break
                except RedisUnavailableError:
                    await anyio.sleep(0.2)
        assert value == b"before"
        new_owner = cluster.node_for(key).address
        assert new_owner is not None
        assert new_owner.port != owner.port
        assert await client.execute("SET", key, "after") == b"OK"
        assert await client.execute("GET", key) == b"after"


async def test_subscription_on_a_cluster_gets_messages_published_anywhere(
    cclient: Client, unique: str
) -> None:
    cluster = _cluster(cclient)
    channel = f"{unique}:ch"
    masters = sorted({a for a in cluster._slots if a is not None}, key=str)
    async with cclient.subscribe(channel) as sub:
        for address in masters:
            async with open_client(f"redis://{address.host}:{address.port}") as direct:
                await direct.execute("PUBLISH", channel, str(address.port))
        got = set()
        with anyio.fail_after(5):
            async for item in sub:
                got.add(item.data)  # type: ignore[union-attr]
                if len(got) == len(masters):
                    break
    assert got == {str(a.port).encode() for a in masters}


async def test_execute_many_spans_every_node(cclient: Client, unique: str) -> None:
    keys = [f"{unique}:{i}" for i in range(40)]
    assert len({_cluster(cclient).node_for(k).address for k in keys}) == 3
    assert await cclient.execute_many([["SET", k, k] for k in keys]) == [b"OK"] * 40
    assert await cclient.execute_many([["GET", k] for k in keys]) == [k.encode() for k in keys]
    await cclient.execute_many([["DEL", k] for k in keys])


async def test_execute_on_primaries_reaches_every_master(cclient: Client, unique: str) -> None:
    keys = [f"{unique}:{i}" for i in range(30)]
    await cclient.execute_many([["SET", k, 1] for k in keys])
    sizes = await cclient.execute_on_primaries("DBSIZE")
    assert len(sizes) == 3
    assert all(size > 0 for size in sizes)
    roles = await cclient.execute_on_primaries("ROLE")
    assert [r[0] for r in roles] == [b"master"] * 3
    await cclient.execute_many([["DEL", k] for k in keys])
