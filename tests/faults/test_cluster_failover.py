"""The three packages on a Redis Cluster of 3 masters + 3 replicas: a master is SIGKILLed and
its replica takes over; then slots move under load (MOVED/ASK/TRYAGAIN), the pool's own slot
among them. Nothing acknowledged is lost. And what a failover can lose: a write the master
acknowledged before its replica got it."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from typing import Any

import anyio
import pytest

import pulse_trio
from pulse_trio import EmbeddedCluster, EmbeddedServer, pool, rmap, streaming
from pulse_trio._redis._cluster import key_slot

from .._util import wait_until
from ..pool._helpers import Recorder
from ._load import TRANSIENT, WORKER_TTL, deployment, keys_of, retrying

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]


async def _slot_owners(client: pulse_trio.Client) -> dict[int, int]:
    """``{slot: port of its master}`` from ``CLUSTER SLOTS``."""
    owners = {}
    for entry in await client.execute("CLUSTER", "SLOTS"):
        for slot in range(int(entry[0]), int(entry[1]) + 1):
            owners[slot] = int(entry[2][1])
    return owners


def _colocated_name(owners: dict[int, int], unique: str) -> str:
    """A deployment name whose map, stream and pool keys live on one master."""
    for i in range(10_000):
        name = f"{unique}{i}"
        if len({owners[key_slot(k)] for k in keys_of(name)}) == 1:
            return name
    raise AssertionError("no co-located name")


def _node(cluster: EmbeddedCluster, port: int) -> EmbeddedServer:
    return next(n for n in cluster.nodes if n.port == port)


async def _node_id(port: int) -> bytes:
    async with pulse_trio.connect(f"redis://127.0.0.1:{port}") as direct:
        node_id: bytes = await direct.execute("CLUSTER", "MYID")
        return node_id


async def _replica_of(cluster: EmbeddedCluster, master_port: int) -> EmbeddedServer:
    master_id = await _node_id(master_port)
    for node in cluster.nodes:
        if node.port == master_port or not node.running:
            continue
        async with pulse_trio.connect(f"redis://127.0.0.1:{node.port}") as direct:
            role = await direct.execute("ROLE")
            if role[0] == b"slave" and int(role[2]) == master_port:
                return node
    raise AssertionError(f"no replica of {master_id!r}")


async def _migrate_slot(slot: int, source: int, target: int, masters: list[int]) -> int:
    """Move ``slot`` and its keys from ``source`` to ``target`` while clients keep running;
    returns the number of keys moved."""
    source_id, target_id = await _node_id(source), await _node_id(target)
    moved = 0
    async with (
        pulse_trio.connect(f"redis://127.0.0.1:{source}") as src,
        pulse_trio.connect(f"redis://127.0.0.1:{target}") as dst,
    ):
        await dst.execute("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        await src.execute("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while True:  # keys move a few at a time: clients see ASK for the moved ones
            keys = await src.execute("CLUSTER", "GETKEYSINSLOT", slot, 2)
            if not keys:
                break
            await src.execute("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            await anyio.sleep(0.05)
    for port in [target, source, *[m for m in masters if m not in (source, target)]]:
        async with pulse_trio.connect(f"redis://127.0.0.1:{port}") as direct:
            await direct.execute("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    return moved


async def test_every_package_survives_a_master_failover_and_slot_migrations(
    unique: str,
) -> None:
    async with (
        EmbeddedCluster(masters=3, replicas=1) as cluster,
        pulse_trio.connect(cluster.url, command_timeout=2.0, connect_timeout=1.0) as client,
    ):
        owners = await _slot_owners(client)
        name = _colocated_name(owners, unique)
        victim_port = owners[key_slot(keys_of(name)[0])]
        async with deployment(client, name) as d:
            await d.write(12, "before")
            # Replicated before the kill: a failover must not lose these (see the test below
            # for what it can lose without WAIT).
            for key in keys_of(name):
                assert await client.execute("WAIT", 1, 5000, key=key) == 1
            await _node(cluster, victim_port).kill()
            with anyio.fail_after(60):
                await d.write(12, "during")  # retried until the replica took over
            assert (await _slot_owners(client))[key_slot(keys_of(name)[0])] != victim_port
            await d.check_nothing_lost()
            # Slot migrations under load: the stream's and the pool's slots move to another
            # master while the writer, the reader, the sink and the pool run.
            masters = sorted(set((await _slot_owners(client)).values()))
            moved = 0
            async with anyio.create_task_group() as tg:
                tg.start_soon(d.write, 20, "migrating")
                for key in keys_of(name)[1:]:
                    owners = await _slot_owners(client)
                    slot = key_slot(key)
                    source = owners[slot]
                    target = next(m for m in masters if m != source)
                    moved += await _migrate_slot(slot, source, target, masters)
            assert moved >= 2
            owners = await _slot_owners(client)
            for key in keys_of(name)[1:]:
                assert owners[key_slot(key)] != owners[key_slot(keys_of(name)[0])]
            await d.write(4, "after")
            await d.check_nothing_lost()


async def test_a_pools_slot_migrates_under_load(unique: str) -> None:
    """The pool's own slot moves to another master, then to the third, two keys at a time,
    while three nodes run jobs and dispatch and stop others: every acknowledged dispatch
    runs once, on one worker at a time, no node fences or re-registers, no key is left on a
    former owner, and the pool works on its new master."""
    async with (
        EmbeddedCluster(masters=3, replicas=1) as cluster,
        pulse_trio.connect(cluster.url, command_timeout=2.0, connect_timeout=1.0) as client,
    ):
        slot = key_slot(keys_of(unique)[2])
        handler = Recorder()  # every worker's: a start of a job running elsewhere is an overlap
        options: dict[str, Any] = {
            "worker_ttl": WORKER_TTL,
            "ack_grace_period": 5.0,
            "worker_shutdown_ttl": 5.0,
        }
        async with (
            pool.open_node(client, unique, **options) as a,
            pool.open_node(client, unique, **options) as b,
            pool.open_node(client, unique, **options) as c,
        ):
            nodes = (a, b, c)
            for n in nodes:
                await n.add_worker(handler)
            workers = await a.workers()
            dispatched: set[str] = set()
            stopped: set[str] = set()

            async def load(
                tag: str,
                until: anyio.Event | None = None,
                running: anyio.Event | None = None,
                count: int = 10,
            ) -> None:
                i = 0
                while i < count or (until is not None and not until.is_set()):
                    if i == 1 and running is not None:
                        running.set()
                    n, key = nodes[i % 3], f"{tag}-{i}"
                    with contextlib.suppress(pool.JobExistsError):  # a retried dispatch that ran
                        await retrying(functools.partial(n.dispatch_job, key, b""))
                    dispatched.add(key)
                    if i % 4 == 3:
                        victim = f"{tag}-{i - 2}"
                        with contextlib.suppress(pool.JobNotFoundError):  # a retried stop
                            await retrying(functools.partial(n.stop_job, victim))
                        stopped.add(victim)
                    i += 1

            await load("before")
            visited = [(await _slot_owners(client))[slot]]
            for hop in range(2):
                owners = await _slot_owners(client)
                masters = sorted(set(owners.values()))
                source = owners[slot]
                target = next(m for m in masters if m not in visited)
                visited.append(target)
                running, migrated = anyio.Event(), anyio.Event()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(load, f"migrating{hop}", migrated, running)
                    await running.wait()
                    moved = await _migrate_slot(slot, source, target, masters)
                    migrated.set()
                assert moved >= 4  # the pool's hashes and sets, and its node streams
                assert (await _slot_owners(client))[slot] == target
                async with pulse_trio.connect(f"redis://127.0.0.1:{source}") as former:
                    assert await former.execute("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
            await load("after")
            expected = dispatched - stopped
            await wait_until(
                lambda: set(handler.running) == expected,
                within=30,
                what=f"jobs: {sorted(expected ^ set(handler.running))}",
            )
            assert handler.overlaps == []
            assert set(handler.starts) == dispatched
            assert max(handler.starts.values()) == 1  # nothing restarted: no node fenced
            assert [n.statistics().fenced for n in nodes] == [0, 0, 0]
            assert await a.workers() == workers
            assert set(handler.stops) == stopped


async def test_a_failover_can_lose_an_acknowledged_write(unique: str) -> None:
    """Redis replication is asynchronous: a master acknowledges a write before its replica has
    it. Here the replica is frozen and cut off, the master takes a map write and an event and
    dies, the replica is promoted: both are gone, and the map's replica converges to what Redis
    holds."""
    async with (
        EmbeddedCluster(masters=3, replicas=1) as cluster,
        pulse_trio.connect(cluster.url, command_timeout=2.0, connect_timeout=1.0) as client,
    ):
        owners = await _slot_owners(client)
        name = _colocated_name(owners, unique)
        master_port = owners[key_slot(keys_of(name)[0])]
        replica = await _replica_of(cluster, master_port)
        stream = streaming.Stream(client, name)
        async with rmap.join(client, name) as m:
            await m.set("kept", "1")
            kept = await stream.add("e", b"kept")
            for key in keys_of(name)[:2]:
                assert await client.execute("WAIT", 1, 5000, key=key) == 1
            pid = _pid(replica)
            os.kill(pid, signal.SIGSTOP)
            try:
                # Cut the replication link (a frozen replica alone would still find the writes
                # in its socket buffer when it wakes up): the master keeps taking writes.
                async with pulse_trio.connect(f"redis://127.0.0.1:{master_port}") as direct:
                    assert await direct.execute("CLIENT", "KILL", "TYPE", "replica") == 1
                await m.set_and_wait("lost", "1")  # acknowledged by the master
                lost = await stream.add("e", b"lost")
                assert m.get("lost") == "1"
                await _node(cluster, master_port).kill()
            finally:
                os.kill(pid, signal.SIGCONT)

            async def promoted() -> bool:
                try:
                    owners = await _slot_owners(client)
                except TRANSIENT:
                    return False
                return bool(owners[key_slot(keys_of(name)[0])] == replica.port)

            with anyio.fail_after(60):
                while not await promoted():
                    await anyio.sleep(0.2)
            entries = await retrying(lambda: client.execute("XRANGE", keys_of(name)[1], "-", "+"))
            ids = [entry[0].decode() for entry in entries]
            assert kept in ids
            assert lost not in ids  # acknowledged, then lost with the master
            # The map's replica re-reads the hash after the fault: it forgets the lost key.
            with anyio.fail_after(30):
                while m.get("lost") is not None:
                    await anyio.sleep(0.1)
            assert m.map() == {"kept": "1"}
            await retrying(lambda: m.set("after", "1"))
            assert await retrying(lambda: client.execute("HGET", keys_of(name)[0], "after")) == (
                b"1"
            )


def _pid(server: EmbeddedServer) -> int:
    process: Any = server._process
    assert process is not None
    return int(process.pid)
