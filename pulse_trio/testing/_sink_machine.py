"""The sink machine: an application's sink handler under redeliveries (see :mod:`._machine`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, ClassVar

import anyio
import anyio.abc
import anyio.from_thread
import attrs
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
)

from ..streaming import OLDEST, Event, Sink, Stream
from ..streaming._sink_policy import SinkTiming
from ._faults import ConnectionKind
from ._machine import DeploymentMachine, _configured_rule


@attrs.define(eq=False)
class SinkInstance:
    """One instance of the sink that the :class:`SinkMachine` runs.

    Attributes:
        number: Its number, in the order instances were started (``#0``, ``#1``...).
        sink: The entered :class:`pulse_trio.streaming.Sink`.
        handled: The events its handler finished, in order (redeliveries included).
        dropped: How many acks it dropped (see :meth:`SinkMachine.drop_next_ack`).
    """

    number: int
    sink: Sink
    leave: Callable[[], None] = attrs.field(repr=False)
    handled: list[Event] = attrs.field(factory=list)
    dropped: int = 0
    busy: bool = False
    stopping: bool = False
    scope: anyio.CancelScope | None = attrs.field(default=None, repr=False)
    done: Any = attrs.field(default=None, repr=False)


class SinkMachine(DeploymentMachine):
    """Instances of one sink consuming events with the application's handler, with
    redeliveries forced.

    The machine adds events at random (drawn from :attr:`events`) to a stream and runs up
    to :attr:`max_instances` instances of one sink on it. Each instance calls
    :meth:`handle` for every event it receives, then acknowledges it. Faults make events
    come again, as they do in production:

    - ``drop_next_ack``: the next handled event is not acknowledged (a lost ack);
    - ``crash_instance``: an instance stops dead, possibly in the middle of :meth:`handle`,
      and leaves with its unacknowledged events (a killed process);
    - ``expire_grace_period``: time passes, so unacknowledged events are claimed and
      delivered again (to any instance);
    - ``kill_blocking_connections``: the blocking reads' connections are killed.

    Override :meth:`handle` (required), and assert the application's invariants in
    :meth:`check` (after every step) and :meth:`check_settled` (at the end, once every
    event was handled and acknowledged). :attr:`added` lists every event added.

    Attributes:
        stream: The :class:`~pulse_trio.streaming.Stream`.
        sink_name: The sink's name.
        added: Every event added, as ``(id, event_name, payload)``, in order.
        handled: Every event the handler finished, in order, on any instance.
        instances: The instances running now.
    """

    #: ``(event_name, payload)`` of the events added.
    events: ClassVar[st.SearchStrategy[tuple[str, bytes]]] = st.tuples(
        st.just("event"), st.binary(max_size=8)
    )
    #: Most instances running at once.
    max_instances: ClassVar[int] = 3
    #: The sink's ack grace period, seconds: short, so redeliveries come soon.
    ack_grace_period: ClassVar[float] = 0.3
    #: How long the end of an example may wait for every event to be handled and acked.
    settle_timeout: ClassVar[float] = 15.0

    def __init__(self) -> None:
        super().__init__()
        self.stream = Stream(self.client, f"{self.prefix}-events", max_len=0)
        self.sink_name = f"{self.prefix}-sink"
        self.added: list[tuple[str, str, bytes]] = []
        self.handled: list[Event] = []
        self.instances: list[SinkInstance] = []
        self._started = 0
        self._drop_acks = 0
        self._timing = SinkTiming.from_grace(self.ack_grace_period)

    # -------------------------------------------------------- the application's part

    async def handle(self, event: Event) -> None:
        """The application's handler: process one event (called for every delivery)."""
        raise NotImplementedError(f"{type(self).__name__} must define async handle(event)")

    def check(self) -> None:
        """The application's invariants, checked after every step (default: none)."""

    def check_settled(self) -> None:
        """The application's invariants once every added event was handled and acked, at
        the end of each example (default: none)."""

    # ---------------------------------------------------------------- machinery

    async def _consume(
        self, instance: SinkInstance, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        instance.done = anyio.Event()
        try:
            with anyio.CancelScope() as scope:
                instance.scope = scope
                task_status.started()
                async for event in instance.sink:
                    instance.busy = True
                    await self.handle(event)
                    instance.handled.append(event)
                    self.handled.append(event)
                    if self._drop_acks:
                        self._drop_acks -= 1
                        instance.dropped += 1
                    else:
                        # Shielded: a crash cancels this task at any point; an ack under
                        # way completes or not, as in a real process.
                        with anyio.CancelScope(shield=True):
                            await instance.sink.ack(event)
                    instance.busy = False
                    if instance.stopping:
                        break
        except Exception as exc:
            self._failures.append(exc)
        finally:
            instance.done.set()

    def _start_instance(self) -> SinkInstance:
        stack = contextlib.ExitStack()
        sink = stack.enter_context(
            self.portal.wrap_async_context_manager(
                self.stream.open_sink(
                    self.sink_name,
                    start=OLDEST,
                    ack_grace_period=self.ack_grace_period,
                    block=0.05,
                )
            )
        )
        self._stack.callback(stack.close)
        instance = SinkInstance(self._started, sink, stack.close)
        self._started += 1
        self.portal.start_task(self._consume, instance)
        self.instances.append(instance)
        return instance

    async def _stop_consumer(self, instance: SinkInstance, *, crash: bool) -> None:
        instance.stopping = True
        assert instance.scope is not None
        if crash or not instance.busy:
            instance.scope.cancel()
        await instance.done.wait()

    def _remove(self, instance: SinkInstance, *, crash: bool) -> None:
        self.call(lambda: self._stop_consumer(instance, crash=crash))
        instance.leave()
        self.instances.remove(instance)

    def _pick(self, which: int) -> SinkInstance:
        return self.instances[which % len(self.instances)]

    # --------------------------------------------------------------------- rules

    @initialize()
    def first_instance(self) -> None:
        """Every example starts with one instance."""
        self._start_instance()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.add_events = _configured_rule(
            SinkMachine._add_events, events=st.lists(cls.events, min_size=1, max_size=3)
        )

    def _add_events(self, events: list[tuple[str, bytes]]) -> None:
        """Add one to three events (from :attr:`events`) to the stream."""
        ids = self.call(self.stream.add_many, events)
        self.added += [(i, n, p) for i, (n, p) in zip(ids, events, strict=True)]

    @precondition(lambda self: len(self.instances) < self.max_instances)
    @rule()
    def start_instance(self) -> None:
        """Start one more instance of the sink."""
        instance = self._start_instance()
        note(f"started instance #{instance.number}")

    @precondition(lambda self: bool(self.instances))
    @rule(which=st.integers(0, 7))
    def stop_instance(self, which: int) -> None:
        """Stop an instance cleanly (after the event it handles, if any) and leave."""
        instance = self._pick(which)
        note(f"stopped instance #{instance.number}")
        self._remove(instance, crash=False)

    @precondition(lambda self: bool(self.instances))
    @rule(which=st.integers(0, 7))
    def crash_instance(self, which: int) -> None:
        """Stop an instance dead (in the middle of ``handle`` if it is in it) and leave
        without acknowledging what it holds: those events are redelivered."""
        instance = self._pick(which)
        note(f"crashed instance #{instance.number} (busy={instance.busy})")
        self._remove(instance, crash=True)

    @rule()
    def drop_next_ack(self) -> None:
        """Do not acknowledge the next handled event: it is redelivered after the grace
        period."""
        self._drop_acks += 1

    @rule()
    def expire_grace_period(self) -> None:
        """Let the ack grace period pass: unacknowledged events become claimable and are
        delivered again."""
        self.sleep(self.ack_grace_period + 2 * self._timing.reclaim_period)

    @rule()
    def kill_blocking_connections(self) -> None:
        """Kill the connections of the instances' blocking reads."""
        self.kill_connections(ConnectionKind.BLOCKING)

    @invariant()
    def application_invariants(self) -> None:
        """No handler raised; then the application's :meth:`check`."""
        self.verify(self.check)

    # ------------------------------------------------------------------- the end

    async def _settled(self) -> bool:
        if not {i for i, _, _ in self.added} <= {event.id for event in self.handled}:
            return False
        info = await self.stream.info()
        return any(
            sink.name == self.sink_name and sink.pending == 0 and not sink.lag
            for sink in info.sinks
        )

    async def _wait_settled(self) -> bool:
        with anyio.move_on_after(self.settle_timeout):
            while not await self._settled():  # noqa: ASYNC110 (polling Redis: no event)
                await anyio.sleep(0.02)
            return True
        return False

    def teardown(self) -> None:
        """Stop faulting, wait until every event was handled and acked (redeliveries
        included), call :meth:`check` and :meth:`check_settled`, then stop every instance."""
        try:
            if self._violation is None:
                self._drop_acks = 0
                if not self.instances and self.added:
                    self._start_instance()
                self.verify(self._check_settled_in_time)
                self.verify(self.check)
                self.verify(self.check_settled)
            for instance in list(self.instances):
                self._remove(instance, crash=False)
        finally:
            super().teardown()

    def _check_settled_in_time(self) -> None:
        if not self.call(self._wait_settled):
            missing = {i for i, _, _ in self.added} - {e.id for e in self.handled}
            raise AssertionError(
                f"not every event was handled and acked within {self.settle_timeout}s"
                f" (never handled: {sorted(missing)})"
            )


# ----------------------------------------------------------------------------- pools
