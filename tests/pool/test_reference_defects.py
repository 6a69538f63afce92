"""Tests named after the defects of the Go pool (reference/upstream-pool.md §12) that apply.

More carry the defect's number in their name elsewhere: ``test_g5_defect_02``,
``test_g4_defect_03``, ``test_g6_defect_05``, ``test_g8_defect_07``, ``test_g9_defect_11``,
``test_g7_defect_13``, ``test_g2_defect_15`` (test_guarantees.py), ``test_defect_14`` and
``test_defect_19`` (test_node.py), ``test_g10_defect_20`` (test_ticker.py). Not tested because
the design has no such part: #8 (no requeue result loop), #22 (documentation). #17 (clock
dependence): only Redis's clock is ever compared, which a single-host test cannot falsify.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from pulse_trio import pool
from pulse_trio.pool import _routing
from pulse_trio.pool._protocol import Membership

from .._util import wait_until, wait_until_async
from ._helpers import NODE_TTL, TTL, Recorder, node

pytestmark = pytest.mark.anyio


async def test_defect_01_client_only_node_lists_and_closes_without_workers(
    client: Any, unique: str
) -> None:
    async with node(client, unique, client_only=True) as c:
        assert await c.job_keys() == []
        assert await c.job_payload("k") is None
        assert await c.workers() == []
    assert c.closed


async def test_defect_04_a_node_declared_dead_stops_its_jobs_before_they_restart(
    client: Any, unique: str
) -> None:
    """Another node reaps this one (here: its liveness entry deleted by hand, as a long GC
    pause would have it): it calls ``stop`` for every job before any restart, and comes back."""
    handler = Recorder()
    async with node(client, unique) as n:
        await n.add_worker(handler)
        for i in range(5):
            await n.dispatch_job(f"k{i}", b"")
        await client.zrem(f"pulse-trio:pool:{{{unique}}}:nodes", [n.id])
        await wait_until(lambda: all(handler.stops[f"k{i}"] == 1 for i in range(5)), within=5)
        await wait_until(lambda: len(handler.running) == 5, within=5, what="restarted")
        for i in range(5):
            key = f"k{i}"
            stop = next(t for t, what, k in handler.log if what == "stop" and k == key)
            restart = [t for t, what, k in handler.log if what == "start" and k == key][-1]
            assert stop < restart
            assert handler.running[key].requeued
        assert handler.overlaps == []


async def test_defect_05_after_a_timed_out_dispatch_a_retry_starts_the_job_once(
    client: Any, unique: str
) -> None:
    handler = Recorder()
    async with node(client, unique, ack_grace_period=0.3) as n:
        with pytest.raises(pool.DispatchTimeoutError):
            await n.dispatch_job("k", b"")
        await n.add_worker(handler)
        await n.dispatch_job("k", b"")
        with anyio.move_on_after(3 * TTL / 5):
            await wait_until(lambda: handler.starts["k"] > 1)
        assert handler.starts["k"] == 1


async def test_defect_06_a_new_worker_gets_jobs_at_once_and_is_not_reaped(
    client: Any, unique: str
) -> None:
    handler = Recorder()
    async with node(client, unique) as a, node(client, unique) as b:
        worker = await b.add_worker(handler)
        for i in range(20):
            await a.dispatch_job(f"k{i}", b"")
        assert len(handler.running) == 20
        await anyio.sleep(2 * NODE_TTL)
        assert [w.id for w in await a.workers()] == [worker.id]
        assert len(handler.running) == 20


async def test_defect_09_dispatch_race_thousands_of_dispatches_never_stall(
    client: Any, unique: str, anyio_backend: Any
) -> None:
    """The Go pool drops an acknowledgement that arrives before the dispatcher waits (a
    20-40 s stall about once in 2-3 thousand dispatches). Here 3,000 dispatches (1,000 under
    asyncio's slow debug mode) from another node, sequential and 64 at a time, each finish
    without a timeout and start once."""
    half = 1500 if anyio_backend == "trio" else 500
    handler = Recorder()
    async with (
        node(client, unique, ack_grace_period=10.0) as workers,
        node(client, unique, client_only=True, ack_grace_period=10.0) as dispatcher,
    ):
        for _ in range(2):
            await workers.add_worker(handler)
        for i in range(half):
            await dispatcher.dispatch_job(f"s{i}", b"x" * 64)

        async def batch(start: int) -> None:
            for i in range(start, half, 64):
                await dispatcher.dispatch_job(f"c{i}", b"x" * 64)

        async with anyio.create_task_group() as tg:
            for start in range(64):
                tg.start_soon(batch, start)
        assert len(handler.running) == 2 * half
        assert set(handler.starts.values()) == {1}


async def test_defect_10_membership_changes_are_never_missed(client: Any, unique: str) -> None:
    async with node(client, unique) as a, node(client, unique) as b:
        workers = [await b.add_worker(Recorder()) for _ in range(6)]
        for w in workers[::2]:
            await b.remove_worker(w)
        alive = {w.id: b.id for w in workers[1::2]}
        await wait_until(lambda: dict(a._membership.workers) == alive, what="a's view")
        await wait_until(lambda: dict(b._membership.workers) == alive, what="b's view")


async def test_defect_12_pools_are_isolated_under_their_own_prefix(
    client: Any, unique: str
) -> None:
    first, second = Recorder(), Recorder()
    async with node(client, unique + "a") as a, node(client, unique + "b") as b:
        await a.add_worker(first)
        await b.add_worker(second)
        await a.dispatch_job("same", b"a")
        await b.dispatch_job("same", b"b")
        assert first.running["same"].payload == b"a"
        assert second.running["same"].payload == b"b"
        keys = [k.decode() for k in await client.keys("*")]
        assert keys
        assert all(k.startswith("pulse-trio:pool:{") for k in keys)  # never Go's map:/pulse:


async def test_defect_16_created_at_is_one_value_everywhere(client: Any, unique: str) -> None:
    handler = Recorder()
    async with node(client, unique) as a, node(client, unique) as b:
        await a.add_worker(handler)
        await b.dispatch_job("k", b"")
        info = await b.job("k")
        assert info is not None
        assert handler.running["k"].created_at == info.created_at


async def test_defect_18_nodes_with_stale_views_still_route_to_the_owner(
    client: Any, unique: str
) -> None:
    """Dispatches from a node whose membership view is old are re-routed (epoch check)."""
    handler = Recorder()
    async with node(client, unique) as a, node(client, unique, client_only=True) as c:
        w1 = await a.add_worker(handler)
        w2 = await a.add_worker(handler)
        c._membership = Membership("0", {w1.id: a.id})  # a stale view
        for i in range(20):
            await c.dispatch_job(f"k{i}", b"")
        placed = {info.key: info.worker_id for info in await c.jobs()}
        assert placed == {f"k{i}": _routing.owner(f"k{i}", [w1.id, w2.id]) for i in range(20)}
        await wait_until_async(lambda: _all_running(c), what="all running")


async def _all_running(n: pool.Node) -> bool:
    return all(info.state == "running" for info in await n.jobs())


async def test_defect_21_node_streams_are_trimmed_as_they_are_read(
    client: Any, unique: str
) -> None:
    handler = Recorder()
    async with node(client, unique) as n, node(client, unique, client_only=True) as c:
        await n.add_worker(handler)
        for i in range(100):
            await c.dispatch_job(f"k{i}", b"")
        await n.dispatch_job("last", b"")  # its script trims what n had read before
        length = await client.xlen(f"pulse-trio:pool:{{{unique}}}:node:{n.id}")
        assert length < 10


async def test_defect_23_a_node_that_fails_to_open_leaves_nothing_behind(
    client: Any, unique: str
) -> None:
    async with node(client, unique) as a:
        await a.shutdown()
    before = sorted(await client.keys("*"))
    refused = node(client, unique)
    with pytest.raises(pool.PoolShuttingDownError):
        async with refused:
            pass
    assert sorted(await client.keys("*")) == before
    assert refused.closed
