"""A node's liveness: heartbeat, lease, self-fencing and recovery.

This module is where guarantees 3 and 4 of the pool can be read in one place, for a node
that loses Redis or is declared dead (moves between live workers are in ``_placement.py``;
the protocol is ``docs/pool-protocol.md`` §6 and §7).

**Guarantee 3: at most one live owner (self-fencing).** Every heartbeat (``pool_heartbeat``,
every ``worker_ttl / 5``) sets the node's deadline to ``TIME + worker_ttl`` on Redis's clock.
The node measures its lease on its own monotonic clock from the moment it *sent* its last
successful heartbeat or registration (Redis set the deadline at least that late), so its
lease ends ``FENCE_FRACTION * worker_ttl`` after that send: before the deadline in Redis, i.e.
before any other node may reap it and restart its jobs. :meth:`Liveness.run_fence_watchdog`
stops every local job (:meth:`Liveness._fence`) once the lease lapsed; while fenced, workers
refuse new starts (``Phase.fenced``) and starts read from the stream are kept, not started.

**Guarantee 4: no job lost.** A heartbeat that answers ``unknown`` (the node was declared
dead: paused, partitioned) or that succeeds while the node is fenced leads to
:meth:`Liveness._recover`: finish fencing, remove the node's workers (``pool_remove`` makes
their jobs unassigned) and register them again, so a paused node comes back instead of going
deaf (reference §12 #3). Starts kept while fenced are then taken (``pool_take`` answers
``stale`` to those the remove made obsolete, and takes the ones placed after the register):
none is left pending on this node. Each successful heartbeat also returns up to ``BATCH``
unassigned keys (a reaped node's jobs, released ones), which the node hands to placement.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

import anyio

from .._boundary import text
from .._errors import RedisUnavailableError
from ._errors import PoolShuttingDownError
from ._node_state import BATCH, Counters, MembershipView, Options, Phase, Spawn, TrimMark
from ._protocol import Membership, Message
from ._redis import PoolRedis
from ._worker import Worker, stop_all_locally

#: Heartbeats per worker TTL.
HEARTBEATS_PER_TTL = 5
#: A node stops its own jobs (fences) when its last successful heartbeat was sent this
#: fraction of the TTL ago: before any other node may consider it dead.
FENCE_FRACTION = 0.7


class Liveness:
    """Registers the node, renews its liveness, fences it and brings it back."""

    def __init__(
        self,
        *,
        io: PoolRedis,
        node_id: str,
        pool: str,
        options: Options,
        logger: logging.Logger,
        phase: Phase,
        workers: Mapping[str, Worker],
        view: MembershipView,
        trim: TrimMark,
        counters: Counters,
        spawn: Spawn,
        on_shutdown: Callable[[], None],
        place: Callable[[Iterable[str]], None],
        take: Callable[[list[Message]], Awaitable[None]],
    ) -> None:
        self._io = io
        self._node_id = node_id
        self._pool = pool
        self._options = options
        self._logger = logger
        self._phase = phase
        self._workers = workers
        self._view = view
        self._trim = trim
        self._counters = counters
        self._spawn = spawn
        self._on_shutdown = on_shutdown
        self._place = place
        self._take = take
        self._ttl_ms = str(max(1, round(options.worker_ttl * 1000)))
        self._wake_heartbeat = anyio.Event()
        #: Local monotonic time until which this node may run jobs (renewed by heartbeats).
        self._lease_until = 0.0
        self._fencing_done = anyio.Event()
        self._fencing_done.set()
        #: Starts read while fenced, taken once recovery re-registered the workers.
        self._deferred_starts: list[Message] = []

    def wake(self) -> None:
        """Send the next heartbeat now (the membership changed, a worker left)."""
        self._wake_heartbeat.set()

    def defer(self, starts: list[Message]) -> None:
        """Keep starts read while fenced; recovery takes them."""
        self._deferred_starts += starts

    async def register(self, workers: Iterable[str]) -> None:
        """Join the pool (or update this node's workers) and start the lease.

        Raises:
            PoolShuttingDownError: The pool is shutting down.
        """
        sent = anyio.current_time()
        reply = await self._io.run("register", self._node_id, self._ttl_ms, *workers)
        if text(reply[0]) == "shutdown":
            raise PoolShuttingDownError(f"pool {self._pool!r} is shutting down: cannot join")
        self._lease_until = sent + FENCE_FRACTION * self._options.worker_ttl
        self._view.update(Membership.from_flat(reply[1:]), from_redis=True)

    async def run_heartbeat(self) -> None:
        """Renew liveness every ``worker_ttl/5`` (sooner when woken); placement is handed to
        the placement task so that nothing delays the next heartbeat."""
        ttl = self._options.worker_ttl
        period = ttl / HEARTBEATS_PER_TTL
        sent = anyio.current_time()
        while True:
            with anyio.move_on_after(max(0.0, sent + period - anyio.current_time())):
                await self._wake_heartbeat.wait()
            self._wake_heartbeat = anyio.Event()
            if self._phase.shutting_down:
                await anyio.sleep(period)
                continue
            sent = anyio.current_time()
            try:
                with anyio.fail_after(ttl / 2):
                    reply = await self._io.run(
                        "heartbeat",
                        self._node_id,
                        self._ttl_ms,
                        self._view.current.epoch,
                        self._trim.take(),
                        "0" if self._options.client_only else "1",
                        str(BATCH),
                    )
            except (TimeoutError, RedisUnavailableError) as exc:
                self._logger.warning(
                    "pool %s: node %s: heartbeat failed (%r)", self._pool, self._node_id, exc
                )
                continue
            status = text(reply[0])
            if status == "shutdown":
                self._on_shutdown()
                continue
            if status == "unknown" or self._phase.fenced:
                # Declared dead (or we fenced ourselves): stop everything we run, give our
                # jobs back and register again (a paused node never goes deaf).
                try:
                    await self._recover()
                except (TimeoutError, RedisUnavailableError) as exc:
                    self._logger.warning(
                        "pool %s: node %s: re-registering failed (%r); retrying",
                        self._pool,
                        self._node_id,
                        exc,
                    )
                except PoolShuttingDownError:
                    self._on_shutdown()
                continue
            self._lease_until = sent + FENCE_FRACTION * ttl
            unassigned, members = reply[1], reply[2]
            if members:
                self._view.update(Membership.from_flat(members), from_redis=True)
            if unassigned and not self._options.client_only:
                self._place(text(k) for k in unassigned)

    async def run_fence_watchdog(self) -> None:
        """Stop this node's jobs once its lease lapsed (self-fencing, guarantee 3)."""
        while True:
            await anyio.sleep_until(self._lease_until)
            if anyio.current_time() >= self._lease_until and not self._phase.fenced:
                await self._fence()
            else:
                await anyio.sleep(self._options.worker_ttl / (2 * HEARTBEATS_PER_TTL))

    async def _fence(self) -> None:
        self._phase.fenced = True
        self._fencing_done = anyio.Event()
        self._counters.fenced += 1
        self._counters.cell.failovers += 1
        self._logger.error(
            "pool %s: node %s could not renew its liveness within worker_ttl: stopping its "
            "jobs before other nodes restart them",
            self._pool,
            self._node_id,
        )
        try:
            await stop_all_locally(list(self._workers.values()))
        finally:
            self._fencing_done.set()

    async def _recover(self) -> None:
        if not self._phase.fenced:
            await self._fence()
        await self._fencing_done.wait()
        workers = [w.id for w in self._workers.values()]
        sent = anyio.current_time()
        with anyio.fail_after(self._options.worker_ttl):
            await self._io.run("remove", self._node_id, "0", *workers)
            await self.register(workers)
        self._lease_until = sent + FENCE_FRACTION * self._options.worker_ttl
        self._phase.fenced = False
        self._logger.warning(
            "pool %s: node %s re-registered after fencing", self._pool, self._node_id
        )
        deferred, self._deferred_starts = self._deferred_starts, []
        if deferred:
            self._spawn(self._take, deferred)
        self._wake_heartbeat.set()
