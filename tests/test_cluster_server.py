"""The embedded Redis Cluster: it forms, serves every slot, runs scripts, broadcasts pub/sub."""

from __future__ import annotations

import anyio
import pytest

import pulse_trio
import pulse_trio.testing
from pulse_trio._redis import Message
from pulse_trio.testing import EmbeddedCluster

from ._admin import AdminClient

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

#: Fixed key names: their slots are spread over all three masters' ranges.
KEYS = [f"key-{i}" for i in range(30)]


async def _key_counts(client: AdminClient) -> list[int]:
    """DBSIZE of every master, asked directly (not through the cluster client)."""
    counts = []
    for node in await client.cluster_nodes():
        if "master" in node["flags"]:
            async with pulse_trio.connect(f"redis://{node['host']}:{node['port']}") as direct:
                counts.append(await direct.execute("DBSIZE"))
    return counts


async def test_cluster_serves_keys_in_every_masters_slots(
    cluster_client: AdminClient,
) -> None:
    info = await cluster_client.cluster_info()
    assert info["cluster_state"] == "ok"
    assert info["cluster_known_nodes"] == "3"
    slots = {await cluster_client.cluster_keyslot(key) for key in KEYS}
    assert len(slots) > 3
    for key in KEYS:
        await cluster_client.set(key, key.upper())
    assert [await cluster_client.get(key) for key in KEYS] == [k.upper().encode() for k in KEYS]
    counts = await _key_counts(cluster_client)
    assert len(counts) == 3
    assert all(count > 0 for count in counts), counts
    assert sum(counts) == len(KEYS)


async def test_single_key_script_runs_on_every_slot(
    cluster_client: AdminClient,
) -> None:
    script = cluster_client.register_script(
        "redis.call('HSET', KEYS[1], 'v', ARGV[1]); return redis.call('HINCRBY', KEYS[1], 'n', 1)"
    )
    for key in KEYS:
        assert await script(keys=[key], args=[key]) == 1
        assert await script(keys=[key], args=[key]) == 2
    for key in KEYS:
        assert await cluster_client.hgetall(key) == {b"v": key.encode(), b"n": b"2"}
    assert all(count > 0 for count in await _key_counts(cluster_client))


async def test_publish_on_any_node_reaches_a_cluster_subscriber(
    cluster_client: AdminClient, unique: str
) -> None:
    channel = f"{unique}:updates"
    nodes = await cluster_client.cluster_nodes()
    assert len(nodes) == 3
    async with cluster_client.subscribe(channel) as sub:
        # Publish once through every node: the subscriber sits on one of them, so at least
        # two messages cross the cluster bus before they reach it.
        for node in nodes:
            async with pulse_trio.connect(f"redis://{node['host']}:{node['port']}") as direct:
                await direct.execute("PUBLISH", channel, f"from {node['port']}")
        received: set[object] = set()
        with anyio.fail_after(5):
            async for item in sub:
                assert isinstance(item, Message), item  # no reconnection in this test
                received.add(item.data)
                if len(received) == len(nodes):
                    break
    assert received == {f"from {node['port']}".encode() for node in nodes}


async def test_cluster_with_replicas_reports_them_and_cleans_up() -> None:
    async with pulse_trio.embedded(cluster=True, replicas=1) as url:
        assert url.startswith("redis+cluster://127.0.0.1:")
        async with pulse_trio.connect(url) as connected:
            assert connected.is_cluster
            client = AdminClient.of(connected)
            # What the client routes to: the 3 masters (one statistics entry per primary).
            assert len(client.statistics()) == 3
            # What cluster clients read (CLUSTER SLOTS): 3 shards of a master and a replica.
            shards = await client.cluster_slots()
            assert len(shards) == 3
            assert all(len(shard_nodes) == 2 for _, _, shard_nodes in shards)
            assert sum(last - first + 1 for first, last, _ in shards) == 16384
            nodes = await client.cluster_nodes()
            masters = [n for n in nodes if "master" in n["flags"]]
            assert len(masters) == 3
            for master in masters:
                replicas = await client.cluster_replicas(master["id"])
                assert len(replicas) == 1
                assert replicas[0]["master"] == master["id"]
            node_ports = [n["port"] for n in nodes]
    for node_port in node_ports:
        with pytest.raises(OSError, match=r"(?i)connect"):
            await anyio.connect_tcp("127.0.0.1", node_port)


async def test_cancellation_stops_every_node_and_removes_its_directory() -> None:
    with anyio.CancelScope() as scope:
        async with EmbeddedCluster(masters=2, replicas=1) as cluster:
            nodes = cluster.nodes
            assert len(nodes) == 4
            assert all(node.running for node in nodes)
            directories = [node.directory for node in nodes]
            assert all((d / "nodes.conf").exists() for d in directories)
            scope.cancel()
            await anyio.sleep(10)
    assert scope.cancelled_caught
    assert not any(node.running for node in nodes)
    assert not any(d.exists() for d in directories)
    for node in nodes:
        with pytest.raises(OSError, match=r"(?i)connect"):
            await anyio.connect_tcp("127.0.0.1", node.port)


async def test_a_cluster_that_does_not_converge_in_time_is_removed() -> None:
    # Masters may serve only ~2 s after they started (Redis's rejoin delay): 0.3 s is too short.
    cluster = EmbeddedCluster(masters=2, start_timeout=0.3)
    message = r"did not converge within 0\.3 s; still waiting for node \d+: "
    with pytest.raises(pulse_trio.testing.EmbeddedServerError, match=message):
        async with cluster:
            pytest.fail("the cluster cannot be ready this early")
    nodes = cluster.nodes
    assert len(nodes) == 2
    assert not any(node.running for node in nodes)
    assert not any(node.directory.exists() for node in nodes)
