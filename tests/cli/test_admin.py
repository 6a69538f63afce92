"""``pulse_trio.admin`` on its own: snapshots of a live deployment, of hand-written pool
records (failed and queued jobs, tickers), of a goa.design/pulse pool's maps, of dead
letters, and of a Redis Cluster (every primary scanned)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

import pulse_trio
from pulse_trio import admin, rmap, streaming

from ._deploy import EVENTS, JOBS, by_name, deployment

pytestmark = pytest.mark.anyio


async def test_snapshot_of_a_live_deployment(client: Any, unique: str) -> None:
    async with deployment(client, unique) as names:
        snap = await admin.snapshot(client)
    assert snap.taken_at.tzinfo is not None
    (pool,) = snap.pools
    assert (pool.name, pool.layout, pool.shutting_down) == (names.pool, "pulse-trio", False)
    assert len(pool.nodes) == 2
    assert len(pool.workers) == 2
    assert sorted(j.key for j in pool.jobs) == [f"job-{i}" for i in range(JOBS)]
    assert all(j.state == "running" for j in pool.jobs)
    # Each job is listed under the worker it runs on, and each worker under its node.
    assert sorted(k for w in pool.workers for k in w.jobs) == [f"job-{i}" for i in range(JOBS)]
    for worker in pool.workers:
        assert worker.jobs == tuple(j.key for j in pool.jobs if j.worker_id == worker.id)
        node = by_name([{"name": n.id, "n": n} for n in pool.nodes], str(worker.node_id))["n"]
        assert worker.id in node.workers
        # A node heartbeats every worker_ttl/5 (default 30 s): its lease is fresh.
        assert worker.lease_left is not None
        assert 20 < worker.lease_left <= 30
    assert (pool.queued, pool.failed, pool.tickers) == (0, (), ())

    stream = by_name(snap.streams, names.stream)
    assert stream.length == EVENTS
    assert not stream.dead_letter
    assert stream.first_id is not None
    assert stream.last_id is not None
    assert stream.first_id < stream.last_id
    (sink,) = stream.sinks
    assert sink.name == names.sink
    assert len(sink.consumers) == 1
    assert sink.pending >= 1
    assert sink.lag is not None
    assert sink.lag >= 1
    assert sink.pending + sink.lag == EVENTS
    assert sink.consumers[0].pending == sink.pending
    assert sink.idle is not None
    assert sink.idle >= 0
    assert sink.dead_letters == 0

    cfg = by_name(snap.maps, names.map)
    assert cfg.values == {"banner": "x" * 300, "welcome-mail": "on"}
    assert (cfg.size, cfg.revision) == (2, 2)
    # Filters read only what they name.
    assert [p.name for p in await admin.pools(client, names.pool)] == [names.pool]
    assert await admin.pools(client, "nosuch") == ()
    assert await admin.streams(client, "nosuch") == ()
    assert await admin.maps(client, "nosuch") == ()


async def test_json_shape(client: Any, unique: str) -> None:
    async with rmap.join(client, unique) as m:
        await m.set("k", "v")
        await streaming.Stream(client, unique).add("e", b"p")
        data = admin.to_json(await admin.snapshot(client))
    assert json.loads(json.dumps(data)) == data
    assert data["version"] == admin.JSON_VERSION == 1
    assert set(data) == {"version", "taken_at", "pools", "streams", "maps"}
    (m_json,) = data["maps"]
    assert m_json == {"name": unique, "revision": 1, "values": {"k": "v"}, "size": 1}
    (s_json,) = data["streams"]
    assert set(s_json) == {"name", "length", "first_id", "last_id", "sinks", "dead_letter"}


async def test_hand_written_pool_records(client: Any, unique: str) -> None:
    """Failed and queued jobs, tickers and a shutdown, as the pool scripts record them."""
    prefix = f"pulse-trio:pool:{{{unique}}}:"
    now_ms = int(time.time() * 1000)
    await client.execute("ZADD", prefix + "nodes", now_ms - 1000, "n1")
    await client.execute("HSET", prefix + "workers", "w1", "n1")
    record = {"s": "failed", "w": "", "f": 5, "e": "boom", "c": now_ms}
    waiting = {"s": "unassigned", "w": "", "f": 0, "e": "", "c": now_ms}
    await client.execute(
        "HSET", prefix + "jobs", "bad", json.dumps(record), "later", json.dumps(waiting)
    )
    await client.execute("SADD", prefix + "queued", "later")
    await client.execute("HSET", prefix + "tickers", "reports", "0 60000")
    await client.execute("SET", prefix + "shutdown", "n1")
    (pool,) = await admin.pools(client)
    assert pool.name == unique
    assert pool.shutting_down
    assert pool.failed == ("bad",)
    assert pool.queued == 1
    assert pool.tickers == ("reports",)
    bad = by_name([{"name": j.key, "j": j} for j in pool.jobs], "bad")["j"]
    assert (bad.state, bad.failures, bad.error, bad.worker_id) == ("failed", 5, "boom", None)
    (node,) = pool.nodes
    # Its deadline passed a second ago: overdue, about to be reaped.
    assert node.lease_left is not None
    assert node.lease_left < 0
    assert node.workers == ("w1",)
    assert pool.workers[0].jobs == ()


async def test_goa_pool_is_recognised(client: Any, unique: str) -> None:
    """A goa.design/pulse pool's replicated maps (reference/upstream-pool.md, section 7)."""
    now_ns = int(await _server_ms(client)) * 1_000_000
    maps = {
        "workers": {"w1": str(now_ns), "w2": "-"},
        "worker-keepalive": {"w1": str(now_ns - 2_000_000_000), "w2": str(now_ns)},
        "jobs": {"w1": json.dumps(["a", "b"])},
        "node-keepalive": {"n1": str(now_ns)},
        "tickers": {f"{unique}:tick": "1|1s"},
    }
    for what, fields in maps.items():
        flat = [x for item in fields.items() for x in item]
        await client.execute("HSET", f"map:{unique}:{what}:content", *flat, "=rev", "1")
    (pool,) = await admin.pools(client)
    assert (pool.name, pool.layout) == (unique, "goa")
    assert [w.id for w in pool.workers] == ["w1", "w2"]
    w1 = pool.workers[0]
    assert w1.jobs == ("a", "b")
    assert w1.heartbeat_age is not None
    assert 1.5 < w1.heartbeat_age < 10
    assert [j.key for j in pool.jobs] == ["a", "b"]
    assert pool.tickers == ("tick",)
    assert [n.id for n in pool.nodes] == ["n1"]
    assert pool.nodes[0].heartbeat_age is not None


async def _server_ms(client: Any) -> int:
    seconds, micros = await client.execute("TIME")
    return int(seconds) * 1000 + int(micros) // 1000


async def test_dead_letters_are_counted_per_sink(client: Any, unique: str) -> None:
    source = streaming.Stream(client, unique)
    async with source.open_sink(
        "email", max_deliveries=1, dead_letter=f"{unique}-dead", ack_grace_period=0.2
    ) as sink:
        await source.add("user.created", b"x")
        async for _event in sink:
            break  # never acked: after one delivery it is dead-lettered
        dead = streaming.Stream(client, f"{unique}-dead")

        async def moved() -> bool:
            return (await dead.info()).length == 1

        from .._util import wait_until_async

        await wait_until_async(moved, within=10, what="the event was dead-lettered")
    found = {s.name: s for s in await admin.streams(client)}
    assert found[f"{unique}-dead"].dead_letter
    assert not found[unique].dead_letter
    assert found[unique].sinks[0].dead_letters == 1


async def test_not_a_client() -> None:
    with pytest.raises(TypeError, match=r"pulse_trio\.Client"):
        await admin.pools(object())  # type: ignore[arg-type]


@pytest.mark.cluster
async def test_cluster_every_primary_is_scanned(cluster_client: Any, unique: str) -> None:
    names = [f"{unique}-{i}" for i in range(12)]  # spread over the slots of 3 masters
    for name in names:
        await streaming.Stream(cluster_client, name).add("e", b"p")
        await cluster_client.execute("HSET", f"map:{name}:content", "k", "v", "=rev", "1")
    nodes = {id(cluster_client._topology.node_for(f"map:{n}:content")) for n in names}
    assert len(nodes) == 3, "the names should land on every master"
    async with deployment(cluster_client, unique) as deployed:
        snap = await admin.snapshot(cluster_client)
    assert {s.name for s in snap.streams} >= {*names, deployed.stream}
    assert {m.name for m in snap.maps} >= {*names, deployed.map}
    assert [p.name for p in snap.pools] == [deployed.pool]
    assert len(snap.pools[0].jobs) == JOBS


async def test_scan_keys_on_one_server(client: pulse_trio.Client) -> None:
    for index in range(2500):  # several SCAN pages
        await client.execute("SET", f"k:{index}", "1")
    await client.execute("HSET", "h:1", "f", "v")
    keys = await client.scan_keys("k:*", count=100)
    assert len(keys) == 2500
    assert keys == sorted(keys)
    assert await client.scan_keys("*", type="hash") == [b"h:1"]
