"""The node's acknowledgements: its workers' outcomes sent to Redis in batches (``pool_ack``).

Workers queue outcomes (a start, a stop, a notification, a job task that ended) without I/O;
one task sends what is queued in one script call as soon as the previous batch returned (no
timer), and a worker that just started a job sends the queue itself when no batch is in
flight (the sequential path saves a task switch). The reply resolves this node's own callers
(a dispatch to a local worker is answered here, not on a stream) and names the starts that
went ``stale`` (the job moved while it started): those are stopped here, so that a job never
runs on two workers (guarantee 3, with ``_placement.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import anyio

from .._boundary import text
from ._node_state import Counters, Retrier, Waiters
from ._redis import PoolRedis
from ._worker import Worker

#: Starts of a requeued job that may fail before it is recorded as failed (guarantee 8).
MAX_START_ATTEMPTS = 5
#: First retry delay of a failed start, in seconds (doubled per failure, capped at the TTL).
RETRY_BASE_DELAY = 0.1


class AckBatcher:
    """Queues the workers' outcomes and sends them in batches."""

    def __init__(
        self,
        *,
        io: PoolRedis,
        node_id: str,
        worker_ttl: float,
        workers: Mapping[str, Worker],
        waiters: Waiters,
        counters: Counters,
        retrying: Retrier,
    ) -> None:
        self._io = io
        self._node_id = node_id
        self._worker_ttl = worker_ttl
        self._workers = workers
        self._waiters = waiters
        self._counters = counters
        self._retrying = retrying
        self._acks: list[str] = []
        self._acks_ready = anyio.Event()
        self._flushing = False

    def ack(
        self, kind: str, key: str, worker: str, token: str, error: str | None, reply: str = ""
    ) -> None:
        """Queue an outcome for the ack task (no I/O here)."""
        if kind == "s" and error is None:
            self._counters.started += 1
            self._counters.cell.started += 1
        elif kind in ("s", "c"):  # a start that raised, a job-task that crashed
            self._counters.cell.failed += 1
        elif kind == "x":
            self._counters.cell.stopped += 1
        self._acks += [
            kind,
            key,
            worker,
            token,
            "0" if error is not None else "1",
            error or "",
            reply,
        ]
        self._acks_ready.set()

    async def run(self) -> None:
        """The ack task: send what is queued whenever no batch is in flight."""
        while True:
            await self._acks_ready.wait()
            self._acks_ready = anyio.Event()
            if not self._flushing:
                await self.flush()

    async def flush_here(self) -> None:
        """Send queued outcomes from the calling task when no batch is in flight (saves a
        task switch on the sequential path); otherwise the ack task sends them next."""
        if not self._flushing and self._acks:
            with anyio.CancelScope(shield=True):
                await self.flush()

    async def flush(self) -> None:
        """Send everything queued, batch after batch, until the queue is empty."""
        self._flushing = True
        try:
            await self._flush_unguarded()
        finally:
            self._flushing = False
            if self._acks:
                self._acks_ready.set()

    async def _flush_unguarded(self) -> None:
        while self._acks:
            batch, self._acks = self._acks, []
            statuses, mine = await self._retrying(
                "acknowledging", functools.partial(self._send, batch)
            )
            for i in range(0, len(mine), 3):
                self._waiters.resolve(text(mine[i]), text(mine[i + 1]) == "1", text(mine[i + 2]))
            for i, status in enumerate(statuses):
                kind, key, worker_id, token = batch[7 * i : 7 * i + 4]
                if text(status) == "stale" and kind == "s":
                    # This worker no longer holds the job (it moved while starting): stop it
                    # here so that it never runs twice.
                    worker = self._workers.get(worker_id)
                    if worker is not None:
                        worker._enqueue(key, functools.partial(worker._stop_locally, key, token))

    async def _send(self, batch: list[str]) -> Any:
        ttl_ms = self._worker_ttl * 1000
        return await self._io.run(
            "ack",
            str(MAX_START_ATTEMPTS),
            str(round(RETRY_BASE_DELAY * 1000)),
            str(round(ttl_ms)),
            self._node_id,
            *batch,
        )
