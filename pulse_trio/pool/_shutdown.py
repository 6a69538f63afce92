"""A node's endings: closing the node (leaving the pool) and the pool-wide shutdown.

**Close** (leaving the node's block, guarantee 9): stop every local job, bounded by
``worker_shutdown_ttl``, send the outcomes still queued, then ``pool_remove`` makes this
node's jobs unassigned and tells every node the new membership; the others place them. If
Redis cannot be reached the node is reaped after ``worker_ttl`` instead (a warning says so).

**Shutdown** (:meth:`Node.shutdown <pulse_trio.pool.Node.shutdown>`): ``pool_shutdown`` sets
the pool's flag and tells every node (client-only ones included); each node stops its jobs
and acknowledges (:meth:`Shutdown.handle`); the caller waits for every live node, bounded by
``worker_shutdown_ttl``, then ``pool_destroy`` removes the pool's keys but a short tombstone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import anyio

from .._boundary import is_transient, text
from ._node_state import CLEANUP_TIMEOUT, Options, Phase, Retrier
from ._redis import PoolRedis
from ._worker import Worker, stop_all_locally


class Shutdown:
    """Closes the node and runs (or follows) the pool-wide shutdown."""

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
        retrying: Retrier,
        flush_acks: Callable[[], Awaitable[None]],
    ) -> None:
        self._io = io
        self._node_id = node_id
        self._pool = pool
        self._options = options
        self._logger = logger
        self._phase = phase
        self._workers = workers
        self._retrying = retrying
        self._flush_acks = flush_acks
        self._handled = False

    async def close(self, *, opening: bool) -> None:
        """Hand this node's jobs over and leave the pool (``opening``: the node's block never
        started, so it has nothing to hand over)."""
        self._phase.closing = True
        with anyio.CancelScope(shield=True):
            if self._phase.shutting_down or opening:
                return
            workers = list(self._workers.values())
            with anyio.move_on_after(self._options.worker_shutdown_ttl):
                await stop_all_locally(workers)
            cleanup = min(CLEANUP_TIMEOUT, self._options.worker_ttl)
            with anyio.move_on_after(cleanup):
                await self._flush_acks()
            try:
                with anyio.fail_after(cleanup):
                    await self._io.run("remove", self._node_id, "1", *[w.id for w in workers])
            except Exception as exc:
                if not is_transient(exc) and not isinstance(exc, TimeoutError):
                    raise
                self._logger.warning(
                    "pool %s: node %s could not leave cleanly (%r); the pool reaps it after "
                    "worker_ttl",
                    self._pool,
                    self._node_id,
                    exc,
                )
            for worker in workers:
                worker._cancel()

    async def shutdown(self) -> None:
        """Shut the whole pool down (see ``Node.shutdown``)."""
        nodes = [text(n) for n in await self._io.run("shutdown", self._node_id)]
        with anyio.move_on_after(self._options.worker_shutdown_ttl):
            attempt = 0
            while True:
                waiting = await self._io.run("shutdown_status", *nodes)
                if not waiting:
                    break
                await anyio.sleep(min(0.2, 0.01 * (attempt + 1)))
                attempt += 1
        tombstone = max(1000, round(2000 * self._options.worker_ttl))
        await self._io.run("destroy", str(tombstone))
        self._phase.shutting_down = True

    async def handle_message(self) -> None:
        """A shutdown message in the node's stream: followed once Redis confirms it (the
        pool's flag is set, by ``pool_shutdown`` in the step that wrote the message), so
        that a message another program wrote there stops nothing."""
        if self._handled:
            return
        if not await self._retrying("shutdown check", self._io.shutting_down):
            self._logger.warning(
                "pool %s: node %s: ignored a shutdown message that Redis does not confirm "
                "(the pool's shutdown flag is not set)",
                self._pool,
                self._node_id,
            )
            return
        await self.handle()

    async def handle(self) -> None:
        """The pool shuts down: stop every local job, then acknowledge (once)."""
        if self._handled:
            return
        self._handled = True
        self._phase.shutting_down = True
        workers = list(self._workers.values())
        keys = [key for w in workers for key in w.job_keys()]
        with anyio.move_on_after(self._options.worker_shutdown_ttl):
            await stop_all_locally(workers)
        await self._retrying(
            "shutdown ack", lambda: self._io.run("shutdown_ack", self._node_id, *keys)
        )
