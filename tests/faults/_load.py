"""A small deployment of the three packages on one client, for the failover tests: two map
replicas, a stream with a reader and a sink, a pool node with a recording worker; writers that
retry until Redis acknowledges, and the checks that nothing acknowledged was lost."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import anyio
import attrs

import pulse_trio
from pulse_trio import pool, rmap, streaming
from pulse_trio.streaming import Event

from .._util import wait_until, wait_until_async
from ..pool._helpers import Recorder

T = TypeVar("T")

#: Errors a write may raise while a master or primary is replaced (the write is retried).
TRANSIENT = (pulse_trio.RedisUnavailableError, pulse_trio.RedisCommandError)
#: Pool timings long enough to ride out a failover (a node fences itself after 0.7 x TTL).
WORKER_TTL = 15.0


async def retrying(op: Callable[[], Awaitable[T]], *, within: float = 60.0) -> T:
    """Run ``op`` until it succeeds (transient errors of a failover are retried)."""
    with anyio.fail_after(within):
        while True:
            try:
                return await op()
            except TRANSIENT:
                await anyio.sleep(0.1)


@attrs.define
class Deployment:
    """What the failover tests run and what they were told was done."""

    client: pulse_trio.Client
    name: str
    alice: rmap.Map
    bob: rmap.Map
    stream: streaming.Stream
    read: list[Event]
    sunk: list[Event]
    node: pool.Node
    worker: Recorder
    #: Map keys whose write returned (acknowledged by Redis).
    map_written: dict[str, str] = attrs.Factory(dict)
    #: Event ids whose add returned.
    added: list[str] = attrs.Factory(list)
    jobs: set[str] = attrs.Factory(set)

    async def write(self, count: int, tag: str) -> None:
        """``count`` map writes, events and jobs, each retried until acknowledged."""
        for i in range(count):
            key, value = f"{tag}-{i}", f"v{i}"
            await retrying(functools.partial(self.alice.set, key, value))
            self.map_written[key] = value
            event_id = await retrying(functools.partial(self.stream.add, "e", key.encode()))
            assert event_id is not None
            self.added.append(event_id)
            if i % 4 == 0:
                job = f"{tag}-job-{i}"
                with contextlib.suppress(pool.JobExistsError):  # a retried dispatch that ran
                    await retrying(functools.partial(self.node.dispatch_job, job, b""))
                self.jobs.add(job)

    async def check_nothing_lost(self, within: float = 30.0) -> None:
        """Every acknowledged write is in Redis and in every replica, reader and sink."""

        async def maps_converged() -> bool:
            try:
                raw = await self.client.execute("HGETALL", f"map:{self.name}:content")
            except TRANSIENT:
                return False
            stored = {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"=")}
            return self.alice.map() == stored == self.bob.map()

        await wait_until_async(maps_converged, within=within, interval=0.1, what="maps")
        for key, value in self.map_written.items():
            assert self.alice.get(key) == value, key
        await wait_until(
            lambda: {e.id for e in self.read} >= set(self.added),
            within=within,
            what=f"reader: missing {set(self.added) - {e.id for e in self.read}}",
        )
        ids = [e.id for e in self.read]
        assert ids == sorted(ids, key=_id_order), "the reader delivered out of order"
        assert len(ids) == len(set(ids)), "the reader delivered an event twice"
        await wait_until(
            lambda: {e.id for e in self.sunk} >= set(self.added),
            within=within,
            what=f"sink: missing {set(self.added) - {e.id for e in self.sunk}}",
        )

        async def all_acked() -> bool:
            try:
                info = await self.stream.info()
            except TRANSIENT:
                return False
            return all(s.pending == 0 for s in info.sinks)

        await wait_until_async(all_acked, within=within, interval=0.1, what="sink acks")
        await wait_until(
            lambda: set(self.worker.running) == self.jobs,
            within=within,
            what=f"jobs: {sorted(self.jobs ^ set(self.worker.running))}",
        )
        assert self.worker.overlaps == []


def _id_order(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


@contextlib.asynccontextmanager
async def deployment(client: pulse_trio.Client, name: str) -> AsyncIterator[Deployment]:
    """Start the packages on ``client``; the sink acknowledges every event it gets."""
    stream = streaming.Stream(client, name)
    read: list[Event] = []
    sunk: list[Event] = []
    worker = Recorder()
    async with (
        rmap.join(client, name) as alice,
        rmap.join(client, name) as bob,
        stream.open_reader(start=streaming.OLDEST) as reader,
        stream.open_sink("g", start=streaming.OLDEST) as sink,
        pool.open_node(
            client, name, worker_ttl=WORKER_TTL, ack_grace_period=5.0, worker_shutdown_ttl=5.0
        ) as node,
        anyio.create_task_group() as tg,
    ):

        async def consume_reader() -> None:
            async for event in reader:
                read.append(event)

        async def consume_sink() -> None:
            async for event in sink:
                sunk.append(event)
                with anyio.CancelScope(shield=True):
                    await retrying(functools.partial(sink.ack, event))

        tg.start_soon(consume_reader)
        tg.start_soon(consume_sink)
        await node.add_worker(worker)
        yield Deployment(client, name, alice, bob, stream, read, sunk, node, worker)
        tg.cancel_scope.cancel()


def keys_of(name: str) -> list[str]:
    """The main Redis keys of the deployment called ``name`` (map, stream, pool)."""
    return [f"map:{name}:content", f"pulse:stream:{name}", f"pulse-trio:pool:{{{name}}}:jobs"]
