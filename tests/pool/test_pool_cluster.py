"""The pool's core on a real 3-master Redis Cluster: every script touches one slot (the
pool's hash tag), reads of node streams follow it, and no script runs while the slot
migrates."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import pulse_trio
from pulse_trio import pool
from pulse_trio._redis._cluster import Cluster
from pulse_trio.pool import _routing
from pulse_trio.pool._protocol import jobs_key
from pulse_trio.streaming._options import key_slot

from .._slots import end_migration, migration_of, move_keys, move_slot, start_migration, url
from .._util import wait_until
from ._helpers import Recorder, node

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]


async def test_pool_keys_share_one_slot(cluster_client: Any, unique: str) -> None:
    handler = Recorder()
    async with node(cluster_client, unique) as n:
        await n.add_worker(handler)
        await n.dispatch_job("k", b"")
        keys = [k async for k in cluster_client.scan_iter(match=f"pulse-trio:pool:{{{unique}}}*")]
    assert len(keys) > 3
    assert len({key_slot(k.decode()) for k in keys}) == 1


async def test_dispatch_stop_notify_and_routing_on_a_cluster(
    cluster_client: Any, unique: str
) -> None:
    handler = Recorder()
    async with node(cluster_client, unique) as a, node(cluster_client, unique) as b:
        w1 = await a.add_worker(handler)
        w2 = await b.add_worker(handler)
        for i in range(20):
            await (a, b)[i % 2].dispatch_job(f"k{i}", b"p")
        placed = {info.key: info.worker_id for info in await a.jobs()}
        assert placed == {f"k{i}": _routing.owner(f"k{i}", [w1.id, w2.id]) for i in range(20)}
        await a.notify_worker("k3", b"n")
        assert ("k3", b"n") in handler.notes
        await b.stop_job("k3")
        assert "k3" not in handler.running
        with pytest.raises(pool.JobExistsError):
            await a.dispatch_job("k4", b"")


async def test_close_hands_over_and_shutdown_on_a_cluster(cluster_client: Any, unique: str) -> None:
    leaving, staying = Recorder(), Recorder()
    async with node(cluster_client, unique) as b:
        await b.add_worker(staying)
        async with node(cluster_client, unique) as a:
            await a.add_worker(leaving)
            for i in range(10):
                await a.dispatch_job(f"k{i}", b"")
        await wait_until(lambda: len(staying.running) == 10)
        await b.shutdown()
        assert staying.running == {}
        left = [k async for k in cluster_client.scan_iter(match=f"pulse-trio:pool:{{{unique}}}*")]
        assert len(left) == 1  # the shutdown tombstone


async def test_ticker_on_a_cluster(cluster_client: Any, unique: str) -> None:
    async with node(cluster_client, unique) as n, n.open_ticker("t", 0.05) as ticker:
        with anyio.fail_after(5):
            first = await ticker.__anext__()
            second = await ticker.__anext__()
        assert second.at > first.at


async def test_no_pool_script_runs_while_its_slot_migrates(
    cluster_client: Any, unique: str
) -> None:
    """Half of the pool's keys moved (the jobs hash on the target, the others on the source):
    every pool script is refused with TRYAGAIN (its guard key is missing) and retried until
    the migration ends, so none reads or re-creates a key on the wrong node: the other keys
    then move without BUSYKEY, and a dispatch sent meanwhile runs once, after the move."""
    topology = cluster_client._topology
    assert isinstance(topology, Cluster)
    handler = Recorder()
    jobs = jobs_key(unique)
    slot, source, target, others = migration_of(topology, jobs)
    masters = sorted([source, target, *others], key=str)
    async with node(cluster_client, unique) as n:
        await n.add_worker(handler)
        await n.dispatch_job("before", b"")
        await start_migration(slot, source, target)
        try:
            await move_keys(slot, source, target, [jobs])
            refused = topology.tryagains
            async with anyio.create_task_group() as tg:
                tg.start_soon(n.dispatch_job, "during", b"")
                await wait_until(lambda: topology.tryagains >= refused + 5, within=10)
                assert handler.starts["during"] == 0
                async with pulse_trio.connect(url(source)) as src:
                    # payloads, nodes, workers, the node's stream... (BUSYKEY if a script had
                    # re-created one of them on the target)
                    assert await src.execute("CLUSTER", "COUNTKEYSINSLOT", slot) >= 3
                    await move_keys(slot, source, target, [])
                    assert await src.execute("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
                await end_migration(masters, slot, target)
        except BaseException:
            await end_migration(masters, slot, source)  # give the session its slot back
            raise
        assert set(handler.running) == {"before", "during"}
        assert handler.starts == {"before": 1, "during": 1}
        assert n.statistics().fenced == 0
        await n.stop_job("before")
        assert set(handler.running) == {"during"}
    # Give the slot back to its first owner for the other tests of the session.
    await move_slot(masters, slot, target, source)
    assert await cluster_client.execute("HGET", jobs, "during") is not None
