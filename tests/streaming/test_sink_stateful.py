"""A hypothesis state machine over sink instances: add, hold, ack, leave, start.

Model: the ids added to one stream. Real system: instances of one sink (grace 0.2 s), some
acking what they receive at once, some holding events unacknowledged until told to ack or
until they leave. Properties:

- safety, after every step: an id is acknowledged successfully (XACK returned 1) at most
  once, only added ids are delivered, and the delivery counts seen for one id are distinct;
- liveness, at the end: once every instance acks, every added id was delivered and the
  group has nothing pending and nothing undelivered (Redis acknowledges an entry at most
  once), whatever instances left holding events on the way.
"""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Any

import anyio
import attrs
from anyio.from_thread import BlockingPortal
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import pulse_trio
from pulse_trio.streaming import OLDEST, Event, Sink, Stream

GRACE = 0.2
MAX_INSTANCES = 3


@attrs.define(eq=False)
class _Instance:
    context: AbstractContextManager[Sink]
    sink: Sink
    acking: bool
    held: list[Event] = attrs.field(factory=list)
    consumer: Future[None] | None = None


class SinkMachine(RuleBasedStateMachine):
    """Instances of one sink against the model of the ids added to its stream."""

    portal: BlockingPortal
    url: str

    def __init__(self) -> None:
        super().__init__()
        self.client_context = self.portal.wrap_async_context_manager(pulse_trio.connect(self.url))
        self.client = self.client_context.__enter__()
        self.stream = Stream(self.client, "sm" + uuid.uuid4().hex[:8], max_len=0)
        self.added: list[str] = []
        self.deliveries: dict[str, list[int]] = {}
        self.acked: Counter[str] = Counter()
        self.instances: list[_Instance] = []
        self.counter = 0

    # -- helpers

    async def _ack(self, sink: Sink, event: Event) -> None:
        self.acked[event.id] += await sink.ack(event)

    def _start(self, acking: bool) -> _Instance:
        context = self.portal.wrap_async_context_manager(
            self.stream.open_sink("s", start=OLDEST, ack_grace_period=GRACE, block=0.05)
        )
        instance = _Instance(context, context.__enter__(), acking)

        async def consume() -> None:
            async for event in instance.sink:
                self.deliveries.setdefault(event.id, []).append(event.deliveries)
                if instance.acking:
                    await self._ack(instance.sink, event)
                else:
                    instance.held.append(event)

        instance.consumer = self.portal.start_task_soon(consume)
        self.instances.append(instance)
        return instance

    def _leave(self, instance: _Instance) -> None:
        # Leaving ends the iteration (an ack in flight completes: cancelling it could lose
        # the count of an XACK that ran).
        assert instance.consumer is not None
        instance.context.__exit__(None, None, None)
        instance.consumer.result(timeout=5)
        self.instances.remove(instance)

    def _ack_held(self, instance: _Instance) -> None:
        held, instance.held = instance.held, []

        async def ack_all() -> None:
            for event in held:
                await self._ack(instance.sink, event)

        self.portal.call(ack_all)

    # -- rules

    @rule(count=st.integers(1, 6))
    def add_events(self, count: int) -> None:
        names = [f"e{self.counter + i}" for i in range(count)]
        self.counter += count
        self.added += self.portal.call(self.stream.add_many, [(n, b"") for n in names])
        note(f"added {names}")

    @precondition(lambda self: len(self.instances) < MAX_INSTANCES)
    @rule(acking=st.booleans())
    def start_instance(self, acking: bool) -> None:
        instance = self._start(acking)
        note(f"started {'acking' if acking else 'holding'} instance {instance.sink.consumer}")

    @precondition(lambda self: any(not i.acking for i in self.instances))
    @rule(which=st.integers(0, MAX_INSTANCES))
    def ack_held(self, which: int) -> None:
        holding = [i for i in self.instances if not i.acking]
        instance = holding[which % len(holding)]
        note(f"{instance.sink.consumer} acks {len(instance.held)} held events")
        self._ack_held(instance)

    @precondition(lambda self: bool(self.instances))
    @rule(which=st.integers(0, MAX_INSTANCES))
    def leave_without_ack(self, which: int) -> None:
        instance = self.instances[which % len(self.instances)]
        note(f"{instance.sink.consumer} leaves holding {len(instance.held)} events")
        self._leave(instance)

    # -- safety

    @invariant()
    def acked_at_most_once_and_deliveries_distinct(self) -> None:
        added = set(self.added)
        for event_id, counts in list(self.deliveries.items()):
            assert event_id in added, f"delivered {event_id}, never added"
            assert len(counts) == len(set(counts)), f"{event_id} delivered as {counts}"
        assert all(n <= 1 for n in self.acked.values()), self.acked.most_common(3)

    # -- liveness

    def teardown(self) -> None:
        try:
            for instance in self.instances:
                instance.acking = True
                self._ack_held(instance)
            if not self.instances:
                self._start(acking=True)

            async def settled() -> bool:
                # Counting XACK replies is not enough: coredis retries a command whose
                # connection broke (e.g. shared with a cancelled XREADGROUP), and a retried
                # XACK reports 0. Redis's own state is the proof: nothing pending, nothing
                # undelivered, and every id delivered at least once.
                for instance in self.instances:
                    held, instance.held = instance.held, []
                    for event in held:
                        await self._ack(instance.sink, event)
                if not set(self.added) <= set(self.deliveries):
                    return False
                summary: Any = await self.client.xpending(self.stream.key, "s")
                [group] = await self.client.xinfo_groups(self.stream.key)
                return int(summary.pending) == 0 and group[b"lag"] == 0

            async def wait_settled() -> bool:
                with anyio.move_on_after(10):
                    while not await settled():
                        await anyio.sleep(0.01)
                    return True
                return False

            undelivered = set(self.added) - set(self.deliveries)
            assert self.portal.call(wait_settled), f"not settled; never delivered: {undelivered}"
            assert all(n <= 1 for n in self.acked.values())
        finally:
            for instance in list(self.instances):
                self._leave(instance)
            self.client_context.__exit__(None, None, None)


def test_sink_state_machine(server_url: str, anyio_backend: Any) -> None:
    backend, options = (
        (anyio_backend, {}) if isinstance(anyio_backend, str) else tuple(anyio_backend)
    )
    with anyio.from_thread.start_blocking_portal(backend, options) as portal:
        SinkMachine.portal = portal
        SinkMachine.url = server_url
        run_state_machine_as_test(
            SinkMachine,
            settings=settings(
                max_examples=20,
                stateful_step_count=12,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
