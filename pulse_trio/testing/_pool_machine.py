"""The pool machine: an application's job handler under moves, stops and partitions (see
:mod:`._machine`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
)

import pulse_trio

from .. import pool
from ._machine import DeploymentMachine, _configured_rule
from ._proxy import FaultProxy


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
