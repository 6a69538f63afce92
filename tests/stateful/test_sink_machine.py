"""Model-based test of sinks: instances of one sink that ack, hold or stall, and leave.

Model: the ids added to one stream. Real system: up to three instances of one sink (ack grace
period 0.2 s), each of one kind: *acking* (acks every event as it arrives), *holding* (keeps
events unacknowledged until told to ack them, or leaves holding them) or *paused* (nobody
iterates it: events wait in its buffer until it is resumed, possibly after a grace period in
which they were claimable, its own reclaim loop included).

Safety, after every step:

- only added ids of this stream are delivered, by this sink;
- the ``deliveries`` of one event are distinct across all deliveries, and strictly increase
  across the deliveries to one instance (pulse-trio reports Redis's delivery counter, 1 for
  a new entry, the claim's count for a reclaimed one);
- every instance's :meth:`Sink.statistics` agree with what the machine saw: events
  delivered and redelivered by its iteration, the sum of what its ``ack`` returned, nothing
  skipped or dead-lettered, nothing buffered while a consumer drains it;
- when a paused instance resumes, the events waiting in its buffer are distinct: an
  instance never queues an event twice (its reclaim loop may claim back an event still
  waiting in its own buffer; pulse-trio de-duplicates those).

Liveness, at the end (teardown): after a grace period in which whatever is held or buffered
becomes claimable (redeliveries), once every instance acks, every added event is delivered
and acknowledged by the group (nothing pending, nothing undelivered), and the instances that
left are gone from the group, claimed from and deleted by the others even when they left
holding events; then, leaving with nothing pending, the last instances delete their own
consumers at once.
"""

from __future__ import annotations

import enum
from concurrent.futures import Future
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from pulse_trio.rmap._protocol import content_key
from pulse_trio.streaming import OLDEST, Event, Sink, Stream
from pulse_trio.streaming._options import keepalive_map_name, membership_map_name
from pulse_trio.streaming._sink_policy import SinkTiming

from .._admin import AdminClient
from .._util import lent_connections
from ._harness import Entered, PortalMachine, run_machine

GRACE = 0.2
TIMING = SinkTiming.from_grace(GRACE)
#: Long enough for an event read just now to be claimable and for a reclaim round to run.
CLAIMABLE_AFTER = GRACE + 2 * TIMING.reclaim_period
MAX_INSTANCES = 3
SETTLE_TIMEOUT = 10.0
#: Instances the regression test opens and leaves.
LEAVES = 30


class Kind(enum.Enum):
    ACKING = "acking"
    HOLDING = "holding"
    PAUSED = "paused"


@attrs.define(eq=False)
class _Instance:
    """One sink instance and what the machine saw of it.

    Its fields are mutated only in the portal's loop (the consumer task and the functions
    the rules run through the portal), so a check run in the loop sees them consistent.
    """

    entered: Entered[Sink]
    kind: Kind
    seen: list[Event] = attrs.field(factory=list)  # what its iteration returned, in order
    held: list[Event] = attrs.field(factory=list)  # seen, not acked yet (holding instances)
    acked: int = 0  # the sum of what its ack() calls returned
    in_flight: int = 0  # events of ack() calls that have not returned to the machine yet
    consumer: Future[None] | None = None

    @property
    def sink(self) -> Sink:
        return self.entered.value

    @property
    def name(self) -> str:
        return f"{self.kind.value} {self.sink.consumer[-6:]}"


class SinkMachine(PortalMachine):
    """Instances of one sink against the model of the ids added to its stream."""

    def __init__(self) -> None:
        super().__init__()
        self.client = AdminClient.of(self.client)  # the same connections, with test helpers
        self.stream = Stream(self.client, self.prefix, max_len=0)
        self.sink_name = self.prefix + "-s"
        self.added: list[str] = []
        self.deliveries: dict[str, list[int]] = {}  # id -> deliveries, every instance
        self.instances: list[_Instance] = []  # open
        self.every_instance: list[_Instance] = []  # open or left
        self.counter = 0

    # -- helpers (the async ones run in the loop)

    def _observe(self, instance: _Instance, event: Event) -> None:
        instance.seen.append(event)
        self.deliveries.setdefault(event.id, []).append(event.deliveries)

    async def _ack(self, instance: _Instance, events: list[Event]) -> None:
        # The consuming task and the machine (acking what is held) may ack at the same time:
        # counts are added after the await (`acked += await ...` would add to a stale value).
        if events:
            instance.in_flight += len(events)
            try:
                # Shielded: leaving cancels the consuming task at any point, and an ack
                # cancelled after the sink counted it would never reach our own count.
                with anyio.CancelScope(shield=True):
                    acked = await instance.sink.ack(*events)
                instance.acked += acked
            finally:
                instance.in_flight -= len(events)

    async def _consume(self, instance: _Instance) -> None:
        async for event in instance.sink:
            self._observe(instance, event)
            if instance.kind is Kind.ACKING:
                await self._ack(instance, [event])
            else:
                instance.held.append(event)

    async def _ack_held(self, instance: _Instance, *, from_now_on: bool) -> None:
        if from_now_on:
            instance.kind = Kind.ACKING
        held, instance.held = instance.held, []
        await self._ack(instance, held)

    async def _drain_buffer(self, instance: _Instance) -> list[Event]:
        """Receive exactly the events waiting in the buffer now (newer ones queue behind)."""
        return [await instance.sink.__anext__() for _ in range(instance.sink.statistics().buffered)]

    def _start(self, kind: Kind) -> _Instance:
        entered = self.enter(
            self.stream.open_sink(self.sink_name, start=OLDEST, ack_grace_period=GRACE, block=0.05)
        )
        instance = _Instance(entered, kind)
        if kind is not Kind.PAUSED:
            instance.consumer = self.portal.start_task_soon(self._consume, instance)
        self.instances.append(instance)
        self.every_instance.append(instance)
        return instance

    def _resume(self, instance: _Instance, kind: Kind) -> None:
        async def resume() -> list[Event]:
            waiting = await self._drain_buffer(instance)
            instance.kind = kind
            for event in waiting:
                self._observe(instance, event)
            if kind is Kind.ACKING:
                await self._ack(instance, waiting)
            else:
                instance.held += waiting
            return waiting

        waiting = self.call(resume)
        ids = [event.id for event in waiting]
        assert len(ids) == len(set(ids)), f"{instance.name} buffered an event twice: {ids}"
        instance.consumer = self.portal.start_task_soon(self._consume, instance)

    def _leave(self, instance: _Instance) -> None:
        # Leaving ends the iteration; the consumer task then ends by itself.
        instance.entered.leave()
        if instance.consumer is not None:
            instance.consumer.result(timeout=5)
        self.instances.remove(instance)

    def _pick(self, kinds: tuple[Kind, ...], which: int) -> _Instance:
        candidates = [i for i in self.instances if i.kind in kinds]
        return candidates[which % len(candidates)]

    def _has(self, *kinds: Kind) -> bool:
        return any(i.kind in kinds for i in self.instances)

    # -- rules

    @rule(count=st.integers(1, 6))
    def add_events(self, count: int) -> None:
        names = [f"e{self.counter + i}" for i in range(count)]
        self.counter += count
        self.added += self.call(self.stream.add_many, [(n, b"") for n in names])
        note(f"added {names}")

    @precondition(lambda self: len(self.instances) < MAX_INSTANCES)
    @rule(kind=st.sampled_from(Kind))
    def start_instance(self, kind: Kind) -> None:
        instance = self._start(kind)
        note(f"started {instance.name}")

    @precondition(lambda self: self._has(Kind.HOLDING))
    @rule(which=st.integers(0, MAX_INSTANCES - 1))
    def ack_held(self, which: int) -> None:
        instance = self._pick((Kind.HOLDING,), which)
        note(f"{instance.name} acks {len(instance.held)} held events")
        self.call(lambda: self._ack_held(instance, from_now_on=False))

    @precondition(lambda self: self._has(Kind.PAUSED))
    @rule(
        which=st.integers(0, MAX_INSTANCES - 1),
        kind=st.sampled_from([Kind.ACKING, Kind.HOLDING]),
        after_grace=st.booleans(),
    )
    def resume(self, which: int, kind: Kind, after_grace: bool) -> None:
        instance = self._pick((Kind.PAUSED,), which)
        if after_grace:
            # Model time passing, not synchronisation: what waits in the buffer becomes
            # claimable, by any instance (this one included), whatever the timing.
            self.call(anyio.sleep, CLAIMABLE_AFTER)
        buffered = instance.sink.statistics().buffered
        note(f"{instance.name} resumes as {kind.value} with {buffered} buffered")
        self._resume(instance, kind)

    @precondition(lambda self: bool(self.instances))
    @rule(which=st.integers(0, MAX_INSTANCES - 1))
    def leave(self, which: int) -> None:
        instance = self._pick(tuple(Kind), which)
        note(f"{instance.name} leaves holding {len(instance.held)} events")
        self._leave(instance)

    # -- safety

    @invariant()
    def deliveries_are_of_added_events_and_increase(self) -> None:
        self.call(self._check_deliveries)

    def _check_deliveries(self) -> None:
        added = set(self.added)
        for event_id, counts in self.deliveries.items():
            assert event_id in added, f"delivered {event_id}, never added"
            assert min(counts) >= 1, (event_id, counts)
            assert len(counts) == len(set(counts)), (event_id, counts)
        for instance in self.every_instance:
            last: dict[str, int] = {}
            for event in instance.seen:
                assert (event.stream_name, event.sink_name) == (self.stream.name, self.sink_name)
                previous = last.get(event.id, 0)
                assert event.deliveries > previous, (instance.name, event.id, previous, event)
                last[event.id] = event.deliveries

    @invariant()
    def statistics_agree_with_what_was_seen(self) -> None:
        self.call(self._check_statistics)

    def _check_statistics(self) -> None:
        for instance in self.every_instance:
            stats = instance.sink.statistics()
            assert stats.consumer == instance.sink.consumer
            assert stats.delivered == len(instance.seen), (instance.name, stats)
            redelivered = sum(event.deliveries > 1 for event in instance.seen)
            assert stats.redelivered == redelivered, (instance.name, stats)
            # An ack() whose reply the sink counted may not have returned here yet.
            low, high = instance.acked, instance.acked + instance.in_flight
            assert low <= stats.acked <= high, (instance.name, stats, low, high)
            assert (stats.skipped, stats.dead_lettered) == (0, 0), (instance.name, stats)
            if instance in self.instances:
                assert stats.streams == (self.stream.name,)

    # -- liveness

    def teardown(self) -> None:
        try:
            self._settle()
            self._leave_last_instances()
        finally:
            super().teardown()

    def _settle(self) -> None:
        """Everyone acks from now on; wait until the group has acked everything."""
        if any(i.held or i.sink.statistics().buffered for i in self.instances):
            # As in `resume`: let what is held or waits in a buffer become claimable, so
            # that every example with a slow instance ends with redeliveries (to it or to
            # another instance) and claiming back events still in its buffer.
            self.call(anyio.sleep, CLAIMABLE_AFTER)
        for instance in list(self.instances):
            if instance.kind is Kind.PAUSED:
                self._resume(instance, Kind.ACKING)
            else:
                self.call(lambda i=instance: self._ack_held(i, from_now_on=True))
        if not self.instances:
            self._start(Kind.ACKING)

        async def settled() -> bool:
            if not set(self.added) <= set(self.deliveries):
                return False
            info = await self.stream.info()
            [group] = [s for s in info.sinks if s.name == self.sink_name]
            return (
                group.pending == 0
                and group.lag == 0
                and await self._consumers() == {i.sink.consumer for i in self.instances}
            )

        async def wait_settled() -> bool:
            with anyio.move_on_after(SETTLE_TIMEOUT):
                while not await settled():
                    await anyio.sleep(0.01)
                return True
            return False

        if not self.call(wait_settled):
            info = self.call(self.stream.info)
            undelivered = set(self.added) - set(self.deliveries)
            consumers = self.call(self._consumers)
            live = {i.sink.consumer for i in self.instances}
            raise AssertionError(
                f"not settled within {SETTLE_TIMEOUT}s: never delivered {undelivered}, "
                f"{info.sinks}, consumers {consumers} (open instances: {live})"
            )
        self.call(self._check_deliveries)
        self.call(self._check_statistics)

    def _leave_last_instances(self) -> None:
        """With nothing pending, leaving deletes each instance's consumer, membership entry
        and keep-alive at once."""
        for instance in list(self.instances):
            self._leave(instance)
        assert self.call(self._consumers) == set()
        assert self.call(self._traces) == (None, [])
        assert lent_connections(self.client) == 0  # every blocking read gave its connection back

    async def _traces(self) -> tuple[Any, list[bytes]]:
        """The sink's membership entry and the keep-alives left in Redis."""
        membership = await self.client.hget(
            content_key(membership_map_name(self.stream.name)), self.sink_name
        )
        keepalives = await self.client.hkeys(content_key(keepalive_map_name(self.sink_name)))
        return membership, [k for k in keepalives if not k.startswith(b"=")]

    async def _consumers(self) -> set[str]:
        """The consumers of the sink's group, as Redis lists them."""
        consumers: Any = await self.client.xinfo_consumers(self.stream.key, self.sink_name)
        return {c[b"name"].decode() for c in consumers}


def test_sink_state_machine(server_url: str, anyio_backend: Any) -> None:
    run_machine(SinkMachine, server_url, anyio_backend, max_examples=20, steps=12)


# --- regressions found by the machine ---------------------------------------------------------


@pytest.mark.anyio
async def test_leaving_removes_membership_and_keepalive(client: Any, unique: str) -> None:
    """An instance that leaves with nothing pending leaves no trace: consumer, membership
    entry, keep-alive. A short grace period makes keep-alive ticks frequent (every 10 ms),
    so a tick during the leaving is near certain over a few dozen leaves."""
    stream = Stream(client, unique)
    members_key = content_key(membership_map_name(unique))
    keepalive_key = content_key(keepalive_map_name("s"))
    leaks = []
    for _ in range(LEAVES):
        async with stream.open_sink("s", ack_grace_period=0.03) as sink:
            await anyio.sleep(0.02)
        assert len(await client.xinfo_consumers(stream.key, "s")) == 0
        membership = await client.hget(members_key, "s")
        keepalives = [k for k in await client.hkeys(keepalive_key) if not k.startswith(b"=")]
        if membership is not None or keepalives:
            leaks.append((sink.consumer, membership, keepalives))
            await client.delete([members_key, keepalive_key])
    assert leaks == [], f"{len(leaks)} of {LEAVES} leaves left traces: {leaks[:3]}"
