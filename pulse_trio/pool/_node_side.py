"""The node as its workers, tickers and schedules see it: one object per node implementing
the protocols of ``_node_api.py`` (``WorkerHost``, ``TickerHost``, ``ScheduleHost``) by
delegating to the node's collaborators and public calls it was given."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attrs

from ._acks import AckBatcher
from ._node_state import Phase
from ._placement import Placement
from ._redis import PoolRedis


@attrs.frozen
class NodeSide:
    """The node as its workers, tickers and schedules see it: implements the protocols of
    ``_node_api.py`` (``WorkerHost``, ``TickerHost``, ``ScheduleHost``) by delegation."""

    id: str
    pool: str
    logger: logging.Logger
    io: PoolRedis
    phase: Phase
    acks: AckBatcher
    placement: Placement
    usable: Callable[[str], object]
    dispatch: Callable[[str, bytes], Awaitable[None]]
    stop: Callable[[str], Awaitable[None]]

    @property
    def stopping(self) -> bool:
        return self.phase.stopping

    def ack(
        self, kind: str, key: str, worker: str, token: str, error: str | None, reply: str = ""
    ) -> None:
        self.acks.ack(kind, key, worker, token, error, reply)

    def check_placement(self, worker_id: str, key: str, epoch: str) -> None:
        self.placement.check_placement(worker_id, key, epoch)

    async def flush_acks_here(self) -> None:
        await self.acks.flush_here()

    def check_usable(self, operation: str) -> object:
        return self.usable(operation)

    async def dispatch_job(self, key: str, payload: bytes) -> None:
        await self.dispatch(key, payload)

    async def stop_job(self, key: str) -> None:
        await self.stop(key)
