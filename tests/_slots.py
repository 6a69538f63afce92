"""Moving a Redis Cluster slot by hand, step by step, as ``redis-cli --cluster reshard`` does
(``SETSLOT IMPORTING``/``MIGRATING``, ``MIGRATE``, ``SETSLOT NODE``), so that a test can act
between the steps."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pulse_trio
from pulse_trio._redis._cluster import Cluster, key_slot
from pulse_trio._redis._settings import Address


def migration_of(cluster: Cluster, key: Any) -> tuple[int, Address, Address, list[Address]]:
    """The slot of ``key``, the master holding it, another master to move it to, the rest."""
    slot = key_slot(key)
    source = cluster.node_for(key).address
    assert source is not None
    masters = sorted({a for a in cluster._slots if a is not None}, key=str)
    target = next(a for a in masters if a != source)
    return slot, source, target, [a for a in masters if a not in (source, target)]


def url(address: Address) -> str:
    """``redis://`` URL of one cluster node."""
    return f"redis://{address.host}:{address.port}"


async def start_migration(slot: int, source: Address, target: Address) -> None:
    """Mark ``slot`` IMPORTING on ``target``, then MIGRATING on ``source``."""
    async with pulse_trio.connect(url(source)) as src, pulse_trio.connect(url(target)) as dst:
        source_id = await src.execute("CLUSTER", "MYID")
        target_id = await dst.execute("CLUSTER", "MYID")
        await dst.execute("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        await src.execute("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)


async def move_keys(slot: int, source: Address, target: Address, keys: list[Any]) -> None:
    """MIGRATE ``keys`` (every key of the slot left on ``source`` when empty) in one command."""
    async with pulse_trio.connect(url(source)) as src:
        keys = keys or await src.execute("CLUSTER", "GETKEYSINSLOT", slot, 10_000)
        if keys:
            await src.execute("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)


async def end_migration(masters: list[Address], slot: int, owner: Address) -> None:
    """``CLUSTER SETSLOT slot NODE owner`` on ``owner`` first, then on the other masters."""
    async with pulse_trio.connect(url(owner)) as direct:
        owner_id = await direct.execute("CLUSTER", "MYID")
    for address in sorted(masters, key=lambda a: a != owner):
        async with pulse_trio.connect(url(address)) as direct:
            await direct.execute("CLUSTER", "SETSLOT", slot, "NODE", owner_id)


async def move_slot(masters: list[Address], slot: int, source: Address, target: Address) -> None:
    """Move ``slot`` and all its keys from ``source`` to ``target``."""
    await start_migration(slot, source, target)
    await move_keys(slot, source, target, [])
    await end_migration(masters, slot, target)


@contextlib.asynccontextmanager
async def migrating(client: Any, key: str) -> AsyncIterator[Address]:
    """Hold ``key``'s slot MIGRATING to another master for the block, its keys still on the
    source (yielded); then move them and the slot over, and back again for the other tests of
    the session (on an error, the slot is given back to the source at once)."""
    topology = client._topology
    assert isinstance(topology, Cluster)
    slot = key_slot(key)
    source = topology.node_for(key).address
    assert source is not None
    masters = sorted({a for a in topology._slots if a is not None}, key=str)
    target = next(a for a in masters if a != source)
    await start_migration(slot, source, target)
    try:
        yield source
        await move_keys(slot, source, target, [])
        await end_migration(masters, slot, target)
    except BaseException:
        await end_migration(masters, slot, source)
        raise
    await move_slot(masters, slot, target, source)
