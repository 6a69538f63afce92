"""Hypothesis state machines that run an application's code against a real deployment.

Each machine drives real pulse-trio objects on a real server, injects the faults that make
distributed code go wrong (redeliveries, killed instances, partitions, lost notifications,
killed connections), and calls the application's code and its invariants. An application
subclasses one machine, plugs in its handler and its checks, and runs it::

    class Orders(SinkMachine):
        def __init__(self) -> None:
            super().__init__()
            self.gateway = FakeGateway()

        async def handle(self, event: Event) -> None:
            await charge_order(self.gateway, event)          # the application's handler

        def check(self) -> None:                             # after every step
            assert all(n <= 1 for n in self.gateway.charges.values())


    def test_orders_are_charged_once(pulse_server: str) -> None:
        Orders.run(pulse_server, max_examples=10, steps=15)

:class:`SinkMachine` runs a sink handler (events added at random; acks dropped, instances
crashed and grace periods expired, so events are redelivered). :class:`PoolMachine` runs a
pool's job handler (jobs dispatched and stopped; workers added and removed; nodes opened,
closed and partitioned). :class:`MapMachine` runs the code that derives state from a
replicated map (concurrent writers; lost notifications, killed and half-open subscriptions),
and checks that every replica's derived state converges.

When an invariant fails, Hypothesis shrinks the run to a shortest sequence of steps that
still fails and reports it (``state = Orders(); state.add_events(...); ...``).

How it runs: Hypothesis drives a machine synchronously, from the test's thread; pulse-trio's
objects live in an event loop. Each example (one sequence of steps) gets its own event loop
in a helper thread (an AnyIO blocking portal, on the backend given to :meth:`run`), its own
client and a unique name prefix (:attr:`DeploymentMachine.prefix`); the application's async
code runs in that loop (:meth:`DeploymentMachine.call`). Everything an example opened is
closed at its end. Keys written under the prefix are left on the server: run machines on the
``pulse_server`` fixture, which flushes it after the test.

Requires Hypothesis (the ``testing`` extra).
"""

from __future__ import annotations

import contextlib
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, TypeVar, cast, overload

import anyio
import anyio.abc
import anyio.from_thread
import attrs
from hypothesis import HealthCheck, Phase, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import pulse_trio

from .. import pool, rmap
from ..rmap._protocol import content_key
from ..streaming import OLDEST, Event, Sink, Stream
from ..streaming._sink_policy import SinkTiming
from ._faults import ConnectionKind, kill_connections
from ._proxy import FaultProxy

T = TypeVar("T")
Backend = str | tuple[str, dict[str, Any]]


def _split_backend(backend: object) -> tuple[str, dict[str, Any]]:
    """``"trio"``, ``"asyncio"``, or ``(name, options)`` as the AnyIO pytest plugin gives it."""
    if isinstance(backend, str):
        return backend, {}
    if (
        isinstance(backend, tuple)
        and len(backend) == 2
        and isinstance(backend[0], str)
        and isinstance(backend[1], dict)
    ):
        return backend[0], dict(backend[1])
    raise ValueError(f"backend must be 'trio', 'asyncio' or (name, options), not {backend!r}")


def _configured_rule(
    function: Callable[..., None], **strategies: st.SearchStrategy[Any]
) -> Callable[..., None]:
    """A rule running ``function`` with arguments from ``strategies``: made per machine
    class, so that a subclass's strategies (class attributes) are the ones drawn from, and
    the failing steps print with their arguments (``state.set(index=0, key='a', ...)``)."""

    def step(self: Any, **arguments: Any) -> None:
        function(self, **arguments)

    step.__name__ = step.__qualname__ = function.__name__.lstrip("_")
    step.__doc__ = function.__doc__
    make_rule: Any = rule
    return make_rule(**strategies)(step)  # type: ignore[no-any-return]


class DeploymentMachine(RuleBasedStateMachine):
    """Base of the machines: an event loop, a client and a unique prefix per example.

    Subclass one of :class:`SinkMachine`, :class:`PoolMachine`, :class:`MapMachine`, or this
    class for a machine of your own (with Hypothesis' ``@rule``/``@invariant``), and run it
    with :meth:`run`.

    Attributes:
        portal: The example's event loop (an AnyIO blocking portal in a helper thread).
        client: A :class:`pulse_trio.Client` opened in that loop, named :attr:`prefix`.
        prefix: A name prefix no other example uses (valid in every kind of name).
    """

    #: The server's URL (set by :meth:`run`).
    url: ClassVar[str] = ""
    #: The AnyIO backend of the examples' loops (set by :meth:`run`).
    backend: ClassVar[Backend] = "trio"

    def __init__(self) -> None:
        super().__init__()
        if not self.url:
            raise RuntimeError(
                f"{type(self).__name__} has no server URL: run it with "
                f"{type(self).__name__}.run(url)"
            )
        self.prefix = "pm" + uuid.uuid4().hex[:10]
        self._stack = contextlib.ExitStack()
        self._tasks: list[anyio.CancelScope] = []
        self._failures: list[BaseException] = []
        self._violation: AssertionError | None = None
        try:
            name, options = _split_backend(self.backend)
            self.portal = self._stack.enter_context(
                anyio.from_thread.start_blocking_portal(name, options)
            )
            self.client: pulse_trio.Client = DeploymentMachine.enter(
                self, pulse_trio.connect(self.url, client_name=self.prefix)
            )
        except BaseException:
            self._stack.close()
            raise

    # ------------------------------------------------------------------ running code

    @overload
    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T: ...
    @overload
    def call(self, fn: Callable[..., T], *args: Any) -> T: ...
    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the example's event loop (awaited if it is async); return
        its result."""
        return self.portal.call(fn, *args)

    def enter(self, context: AbstractAsyncContextManager[T]) -> T:
        """Enter ``context`` in the example's loop; it is left when the example ends."""
        return self._stack.enter_context(self.portal.wrap_async_context_manager(context))

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: Any) -> anyio.CancelScope:
        """Run ``fn(*args)`` in the background in the example's loop until it returns or the
        example ends. An exception it raises fails the next step.

        Returns:
            Its cancel scope (cancel it to stop the task).
        """

        async def run(*, task_status: anyio.abc.TaskStatus[anyio.CancelScope]) -> None:
            with anyio.CancelScope() as scope:
                task_status.started(scope)
                try:
                    await fn(*args)
                except Exception as exc:
                    self._failures.append(exc)

        _, scope = self.portal.start_task(run)
        self._tasks.append(scope)
        return cast(anyio.CancelScope, scope)

    def raise_failures(self) -> None:
        """Raise the first exception of a background task (:meth:`spawn`), if any."""
        if self._failures:
            failure = self._failures[0]
            raise AssertionError(f"a background task failed: {failure!r}") from failure

    def verify(self, check: Callable[[], None]) -> None:
        """Run ``check`` (an invariant); if it fails, keep its :class:`AssertionError`
        and raise it at the end of the example.

        The steps that follow still run (unchecked): a failure then ends every run at the
        same point, whichever step a timing-dependent violation showed in first, which
        keeps Hypothesis' replays and shrinking consistent on a real, concurrent system.
        Background failures (:meth:`spawn`) are checked first.
        """
        if self._violation is not None:
            return
        try:
            self.raise_failures()
            check()
        except AssertionError as exc:
            self._violation = exc
            note(f"invariant failed (raised at the end): {exc}")

    def wait_for(self, check: Callable[[], None], within: float) -> None:
        """Call ``check`` until it does not raise :class:`AssertionError`, for at most
        ``within`` seconds; then once more, letting its error out.

        ``check`` runs in the test's thread (it may use :meth:`call`).
        """
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                check()
            except AssertionError:
                time.sleep(0.02)
            else:
                return
        check()

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass in the example's loop (model time passing: a timeout, a
        grace period)."""
        self.call(anyio.sleep, seconds)

    def kill_connections(self, kind: ConnectionKind | str, client: Any = None) -> int:
        """Kill the connections of one kind of :attr:`client` (or of ``client``); see
        :func:`pulse_trio.testing.kill_connections`."""
        return self.call(kill_connections, client or self.client, ConnectionKind(kind))

    def teardown(self) -> None:
        """Stop the background tasks, leave everything entered (newest first), close the
        client, stop the loop; then raise the first invariant that failed (:meth:`verify`)."""
        try:
            tasks, self._tasks = self._tasks, []

            def cancel() -> None:
                for scope in tasks:
                    scope.cancel()

            if tasks:
                self.portal.call(cancel)
        finally:
            self._stack.close()
        violation = self._violation
        if violation is not None:
            # One place raises every failure, whichever check and step it came from: to
            # Hypothesis they are one bug, however the timing of a run moved it.
            frame = traceback.extract_tb(violation.__traceback__)[-1]
            raise AssertionError(
                f"{violation} (checked at {frame.filename}:{frame.lineno}; see the "
                f"note after the step it failed after)"
            )

    # ------------------------------------------------------------------ running it

    @classmethod
    def run(
        cls,
        url: str,
        *,
        backend: object = "trio",
        max_examples: int = 10,
        steps: int = 15,
        settings_: settings | None = None,
    ) -> None:
        """Run the machine against the server at ``url``; raise what Hypothesis raises.

        On a failure, Hypothesis shrinks the run and reports the shortest failing sequence
        of steps (printed, and attached to the exception as notes).

        Args:
            url: The server (``pulse_server`` fixture, or any ``redis://`` URL you own:
                the machines write under unique prefixes and do not flush).
            backend: ``"trio"``, ``"asyncio"``, or the ``anyio_backend`` fixture's value.
            max_examples: How many sequences of steps to try (bounds the runtime).
            steps: The most steps per sequence.
            settings_: Hypothesis settings to use instead (``max_examples`` and ``steps``
                are then ignored).
        """
        configured = type(cls.__name__, (cls,), {"url": url, "backend": backend})
        configured.__qualname__ = cls.__qualname__
        run_state_machine_as_test(
            configured,
            settings=settings_
            or settings(
                max_examples=max_examples,
                stateful_step_count=steps,
                deadline=None,
                # One shrunk failure, not a group of look-alikes (a failing check may fail
                # in a step or at the end of the example).
                report_multiple_bugs=False,
                # No "explain" phase: it traces every line of the examples it re-runs, which
                # slows a real, multi-threaded deployment down by an order of magnitude.
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )


# ---------------------------------------------------------------------------- sinks


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


@attrs.define(eq=False)
class PoolNode:
    """One node the :class:`PoolMachine` runs (own client, through its own proxy).

    Attributes:
        number: Its number, in the order nodes were opened.
        node: The entered :class:`pulse_trio.pool.Node`.
        proxy: The :class:`~pulse_trio.testing.FaultProxy` between its client and Redis.
        workers: Its workers.
    """

    number: int
    node: pool.Node
    proxy: FaultProxy
    close: Callable[[], None] = attrs.field(repr=False)
    workers: list[pool.Worker] = attrs.field(factory=list)


class PoolMachine(DeploymentMachine):
    """A pool whose workers run the application's job handler, under churn and faults.

    Nodes (up to :attr:`max_nodes`, each with its own client through its own
    :class:`~pulse_trio.testing.FaultProxy`) join one pool; the machine dispatches and
    stops jobs (keys from :attr:`job_keys`), adds and removes workers, opens and closes
    nodes, and partitions a node from Redis for longer than :attr:`worker_ttl` (the node
    stops its jobs, the others restart them; then the partition heals). Each worker's
    handler comes from :meth:`make_handler`.

    Override :meth:`make_handler` (required) and assert the application's invariants:
    :meth:`check` after every step (what must always hold, e.g. "no key has two running
    followers"), :meth:`check_stable` once the pool settled after a step (polled for up to
    :attr:`stable_within` seconds, e.g. "every job has exactly one running follower"), and
    :meth:`check_closed` at the end, once every node left. :attr:`jobs` is the model: the
    jobs dispatched and not stopped, with their payloads.

    Requires a single server (the proxies forward to one address), not a cluster.

    Attributes:
        pool_name: The pool's name.
        nodes: The nodes open now.
        jobs: Key to payload of every job that exists (dispatched, not stopped).
    """

    #: Keys of the jobs dispatched and stopped (few: so that they collide).
    job_keys: ClassVar[st.SearchStrategy[str]] = st.sampled_from([f"job-{i}" for i in range(4)])
    #: Payloads of the jobs.
    job_payloads: ClassVar[st.SearchStrategy[bytes]] = st.binary(max_size=4)
    #: Most nodes open at once.
    max_nodes: ClassVar[int] = 3
    #: The nodes' ``worker_ttl``, seconds (a partition lasts 1.5 times this).
    worker_ttl: ClassVar[float] = 2.0
    #: How long :meth:`check_stable` may take to pass after a step, seconds.
    stable_within: ClassVar[float] = 10.0
    #: Whether to partition nodes (the slowest step: 1.5 x ``worker_ttl``; only while
    #: jobs exist).
    partitions: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.pool_name = f"{self.prefix}-pool"
        self.nodes: list[PoolNode] = []
        self.jobs: dict[str, bytes] = {}
        self._opened = 0

    # -------------------------------------------------------- the application's part

    def make_handler(self) -> pool.JobHandler:
        """The application's job handler for a new worker (called once per worker)."""
        raise NotImplementedError(f"{type(self).__name__} must define make_handler()")

    def check(self) -> None:
        """Invariants that hold after every step, at once (default: none)."""

    def check_stable(self) -> None:
        """Invariants that hold once the pool settled after a step (default: none)."""

    def check_closed(self) -> None:
        """Invariants once every node left, at the end of each example (default: none)."""

    # ---------------------------------------------------------------- machinery

    def _open_node(self) -> PoolNode:
        stack = contextlib.ExitStack()
        try:
            proxy = stack.enter_context(
                self.portal.wrap_async_context_manager(FaultProxy(self.url))
            )
            client = stack.enter_context(
                self.portal.wrap_async_context_manager(
                    pulse_trio.connect(
                        proxy.url,
                        client_name=f"{self.prefix}-n{self._opened}",
                        command_timeout=self.worker_ttl,
                    )
                )
            )
            node = stack.enter_context(
                self.portal.wrap_async_context_manager(
                    pool.open_node(
                        client,
                        self.pool_name,
                        worker_ttl=self.worker_ttl,
                        worker_shutdown_ttl=2 * self.worker_ttl,
                        ack_grace_period=2 * self.worker_ttl,
                    )
                )
            )
        except BaseException:
            stack.close()
            raise
        self._stack.callback(stack.close)
        opened = PoolNode(self._opened, node, proxy, stack.close)
        self._opened += 1
        self.nodes.append(opened)
        return opened

    def _add_worker(self, opened: PoolNode) -> None:
        worker = self.call(opened.node.add_worker, self.make_handler())
        opened.workers.append(worker)

    def _worker_count(self) -> int:
        return sum(len(n.workers) for n in self.nodes)

    def _pick(self, which: int) -> PoolNode:
        return self.nodes[which % len(self.nodes)]

    def _closable(self) -> list[PoolNode]:
        """The nodes that may close: at least one worker remains elsewhere."""
        if len(self.nodes) < 2:
            return []
        return [n for n in self.nodes if self._worker_count() > len(n.workers)]

    # --------------------------------------------------------------------- rules

    @initialize()
    def two_nodes_one_worker(self) -> None:
        """Every example starts with two nodes, one of them with a worker."""
        first = self._open_node()
        self._open_node()
        self._add_worker(first)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        which = st.integers(0, 7)
        cls.dispatch = _configured_rule(
            PoolMachine._dispatch, key=cls.job_keys, payload=cls.job_payloads, which=which
        )
        cls.stop = _configured_rule(PoolMachine._stop, key=cls.job_keys, which=which)

    def _dispatch(self, key: str, payload: bytes, which: int) -> None:
        """Dispatch a job from a node (``JobExistsError`` when the key exists)."""
        opened = self._pick(which)
        try:
            self.call(opened.node.dispatch_job, key, payload)
        except pool.JobExistsError:
            assert key in self.jobs, f"dispatch({key!r}): JobExistsError, but no such job"
        else:
            assert key not in self.jobs, f"dispatch({key!r}) succeeded on an existing job"
            self.jobs[key] = payload

    def _stop(self, key: str, which: int) -> None:
        """Stop a job from a node (``JobNotFoundError`` when there is none)."""
        opened = self._pick(which)
        try:
            self.call(opened.node.stop_job, key)
        except pool.JobNotFoundError:
            assert key not in self.jobs, f"stop({key!r}): JobNotFoundError, but it exists"
        else:
            assert key in self.jobs, f"stop({key!r}) succeeded on a job that does not exist"
            del self.jobs[key]

    @rule(which=st.integers(0, 7))
    def add_worker(self, which: int) -> None:
        """Add a worker (with a new handler) to a node: jobs move to it."""
        opened = self._pick(which)
        self._add_worker(opened)
        note(f"node #{opened.number} has {len(opened.workers)} workers")

    @precondition(lambda self: self._worker_count() > 1)
    @rule(which=st.integers(0, 7))
    def remove_worker(self, which: int) -> None:
        """Remove a worker: its jobs are stopped, then restarted on the others."""
        with_workers = [n for n in self.nodes if n.workers]
        opened = with_workers[which % len(with_workers)]
        worker = opened.workers.pop(which % len(opened.workers))
        self.call(opened.node.remove_worker, worker)

    @precondition(lambda self: len(self.nodes) < self.max_nodes)
    @rule()
    def open_node(self) -> None:
        """Open one more node (without workers)."""
        self._open_node()

    @precondition(lambda self: bool(self._closable()))
    @rule(which=st.integers(0, 7))
    def close_node(self, which: int) -> None:
        """Close a node: its jobs are handed over to the other nodes' workers."""
        candidates = self._closable()
        opened = candidates[which % len(candidates)]
        note(f"closing node #{opened.number}")
        opened.close()
        self.nodes.remove(opened)

    @precondition(lambda self: self.partitions and bool(self.jobs))
    @rule(which=st.integers(0, 7))
    def partition_node(self, which: int) -> None:
        """Cut a node off from Redis (silently) for 1.5 x ``worker_ttl``, then heal: it
        stops its jobs, the other nodes restart them, and it rejoins."""
        opened = self._pick(which)
        note(f"partitioning node #{opened.number}")
        self.call(opened.proxy.freeze)
        try:
            self.sleep(1.5 * self.worker_ttl)
        finally:
            self.call(opened.proxy.heal)

    @invariant()
    def application_invariants(self) -> None:
        """No handler failed; :meth:`check`; then :meth:`check_stable`, waited for."""
        self.verify(self.check)
        self.verify(lambda: self.wait_for(self.check_stable, self.stable_within))

    def teardown(self) -> None:
        """Close every node (newest first), then call :meth:`check_closed`."""
        try:
            for opened in reversed(self.nodes):
                opened.close()
            self.nodes.clear()
            self.verify(self.check_closed)
        finally:
            super().teardown()


# ------------------------------------------------------------------------------ maps


class MapMachine(DeploymentMachine):
    """Replicas of one map written concurrently, each feeding the application's derived
    state, with lost notifications and killed or half-open subscriptions.

    :attr:`replica_count` replicas join one map, each with its own client through its own
    :class:`~pulse_trio.testing.FaultProxy`. For each replica, the application's
    :meth:`follow` runs in the background (typically ``async with replica.subscribe()``, and
    rebuild or update its state on every change). The machine sets and deletes keys (from
    :attr:`keys`, values from :attr:`values`) through random replicas, several at once too,
    and injects faults: a write whose notification is lost, every subscription killed, one
    replica's subscription gone half-open, one replica's connections cut.

    After every step the replicas converge to what Redis holds (the library's guarantee);
    then, within :attr:`derive_within` seconds, :meth:`derived` of every replica must equal
    :meth:`expected` of that content: the application's derived state converges too.

    Override :meth:`follow`, :meth:`derived` and :meth:`expected`.

    Attributes:
        map_name: The map's name.
        replicas: The replicas (:class:`pulse_trio.rmap.Map`), by index.
    """

    #: The keys written (few: so that writes collide).
    keys: ClassVar[st.SearchStrategy[str]] = st.sampled_from(["a", "b", "c"])
    #: The values written.
    values: ClassVar[st.SearchStrategy[str]] = st.text("xyz", max_size=3)
    #: How many replicas join.
    replica_count: ClassVar[int] = 3
    #: How long the replicas may take to converge to Redis after a step, seconds.
    converge_within: ClassVar[float] = 10.0
    #: How long the derived states may take to follow the converged replicas, seconds.
    derive_within: ClassVar[float] = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.map_name = f"{self.prefix}-map"
        self.replicas: list[rmap.Map] = []
        self._proxies: list[FaultProxy] = []
        self._clients: list[pulse_trio.Client] = []

    # -------------------------------------------------------- the application's part

    async def follow(self, index: int, replica: rmap.Map) -> None:
        """The application's code keeping derived state from ``replica`` (runs in the
        background from the replica's join to the end of the example)."""
        raise NotImplementedError(f"{type(self).__name__} must define async follow()")

    def derived(self, index: int) -> object:
        """The application's derived state of replica ``index`` now."""
        raise NotImplementedError(f"{type(self).__name__} must define derived(index)")

    def expected(self, content: dict[str, str]) -> object:
        """What the derived state must be for the map ``content``."""
        raise NotImplementedError(f"{type(self).__name__} must define expected(content)")

    # ---------------------------------------------------------------- machinery

    async def _stored(self) -> dict[str, str]:
        raw = await self.client.execute("HGETALL", content_key(self.map_name))
        pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
        return {
            key.decode("utf-8", "surrogateescape"): value.decode("utf-8", "surrogateescape")
            for key, value in pairs
            if not key.startswith(b"=")
        }

    def _replica(self, index: int) -> rmap.Map:
        return self.replicas[index % len(self.replicas)]

    # --------------------------------------------------------------------- rules

    @initialize()
    def join_replicas(self) -> None:
        """Every replica joins (each with its own client and proxy); :meth:`follow` starts."""
        for index in range(self.replica_count):
            proxy = self.enter(FaultProxy(self.url))
            client = self.enter(
                pulse_trio.connect(proxy.url, client_name=f"{self.prefix}-r{index}")
            )
            replica = self.enter(
                rmap.join(client, self.map_name, ping_interval=0.2, ping_timeout=0.5)
            )
            self._proxies.append(proxy)
            self._clients.append(client)
            self.replicas.append(replica)
            self.spawn(self.follow, index, replica)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        index = st.integers(0, 7)
        keys, values = cls.keys, cls.values
        cls.set = _configured_rule(MapMachine._set, index=index, key=keys, value=values)
        cls.delete = _configured_rule(MapMachine._delete, index=index, key=keys)
        cls.concurrent_writes = _configured_rule(
            MapMachine._concurrent_writes,
            writes=st.lists(st.tuples(index, keys, st.none() | values), min_size=2, max_size=4),
        )
        cls.lost_notification = _configured_rule(
            MapMachine._lost_notification,
            key=keys,
            value=values,
            index=index,
            then_key=keys,
            then_value=values,
        )

    def _set(self, index: int, key: str, value: str) -> None:
        """Set a key through a replica."""
        self.call(self._replica(index).set, key, value)

    def _delete(self, index: int, key: str) -> None:
        """Delete a key through a replica."""
        self.call(self._replica(index).delete, key)

    def _concurrent_writes(self, writes: list[tuple[int, str, str | None]]) -> None:
        """Several writes through different replicas at the same time: ``(replica, key,
        value)``, a value of ``None`` deleting the key."""

        async def write_all() -> None:
            async with anyio.create_task_group() as tg:
                for index, key, value in writes:
                    replica = self._replica(index)
                    if value is None:
                        tg.start_soon(replica.delete, key)
                    else:
                        tg.start_soon(replica.set, key, value)

        self.call(write_all)

    def _lost_notification(
        self, key: str, value: str, index: int, then_key: str, then_value: str
    ) -> None:
        """A write of ``key`` whose notification reaches no replica (written behind their
        back, with the revision bumped), then an ordinary write through a replica: the
        replicas must notice the gap in revisions."""
        hash_key = content_key(self.map_name)
        raw_key, raw_value = (t.encode("utf-8", "surrogateescape") for t in (key, value))

        async def write() -> None:
            await self.client.execute("HSET", hash_key, raw_key, raw_value)
            await self.client.execute("HINCRBY", hash_key, "=rev", 1)

        self.call(write)
        self.call(self._replica(index).set, then_key, then_value)

    @rule()
    def kill_subscriptions(self) -> None:
        """Kill every replica's subscribed connection (they resubscribe and resync)."""
        for client in self._clients:
            self.call(kill_connections, client, ConnectionKind.PUBSUB)

    @rule(index=st.integers(0, 7))
    def half_open_subscription(self, index: int) -> None:
        """One replica's subscription goes silent (a half-open connection): its health
        check replaces it."""
        proxy = self._proxies[index % len(self._proxies)]
        self.call(proxy.freeze_subscribers)

    @rule(index=st.integers(0, 7))
    def cut_connections(self, index: int) -> None:
        """Close every connection of one replica's client (it reconnects)."""
        self.call(self._proxies[index % len(self._proxies)].cut)

    def teardown(self) -> None:
        """Leave the replicas once every subscription is up (leaving one while it
        resubscribes races with its resync), then everything else."""

        async def connected() -> None:
            with anyio.move_on_after(self.converge_within):
                while not all(r.statistics().connected for r in self.replicas):  # noqa: ASYNC110
                    await anyio.sleep(0.01)

        try:
            self.call(connected)
        finally:
            super().teardown()

    @invariant()
    def derived_state_converges(self) -> None:
        """The replicas converge to Redis, then every derived state to :meth:`expected`."""
        self.verify(self._converges)

    def _converges(self) -> None:
        async def converged() -> dict[str, str] | None:
            with anyio.move_on_after(self.converge_within):
                while True:
                    stored = await self._stored()
                    if all(replica.map() == stored for replica in self.replicas):
                        return stored
                    await anyio.sleep(0.01)
            return None

        stored = self.call(converged)
        if stored is None:
            views = [replica.map() for replica in self.replicas]
            raise AssertionError(
                f"the replicas {views} did not converge to Redis within {self.converge_within}s"
            )
        expected = self.expected(stored)

        def check() -> None:
            self.raise_failures()
            for index in range(len(self.replicas)):
                derived = self.derived(index)
                assert derived == expected, (
                    f"replica {index}: derived state {derived!r} != expected {expected!r} "
                    f"for the map {stored!r}"
                )

        self.wait_for(check, self.derive_within)
