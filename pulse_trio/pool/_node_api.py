"""What workers, tickers and schedules need from their node: three narrow protocols.

:class:`~pulse_trio.pool.Worker` (``_worker.py``), :class:`~pulse_trio.pool.Ticker` and the
schedule task (``_ticker.py``) are made by a node and call back into it. They depend on these
protocols, not on :class:`~pulse_trio.pool.Node`, so the imports of the package run one way:
``_node.py`` imports the worker and the ticker, never the reverse. The node hands each of them
an object that implements only what its protocol names.
"""

from __future__ import annotations

import logging
from typing import Protocol

from ._redis import PoolRedis


class WorkerHost(Protocol):
    """What a :class:`~pulse_trio.pool.Worker` needs from its node."""

    @property
    def id(self) -> str:
        """The node's id."""

    @property
    def pool(self) -> str:
        """The pool's name (for log messages)."""

    @property
    def logger(self) -> logging.Logger:
        """Where to log."""

    @property
    def stopping(self) -> bool:
        """Whether the node closes, is fenced or the pool shuts down: its jobs were (or are
        being) stopped, so a start that arrives now must not run."""

    def ack(
        self, kind: str, key: str, worker: str, token: str, error: str | None, reply: str = ""
    ) -> None:
        """Queue an outcome (``s`` start, ``x`` stop, ``n`` notification, ``c`` crash) for the
        node's acknowledgement batches (no I/O)."""

    def check_placement(self, worker_id: str, key: str, epoch: str) -> None:
        """After a start routed with membership ``epoch``: move the job if routing changed."""

    async def flush_acks_here(self) -> None:
        """Send queued outcomes now from the calling task, unless a batch is in flight."""


class TickerHost(Protocol):
    """What a :class:`~pulse_trio.pool.Ticker` needs from its node."""

    @property
    def pool(self) -> str:
        """The pool's name."""

    @property
    def logger(self) -> logging.Logger:
        """Where to log."""

    @property
    def io(self) -> PoolRedis:
        """The pool's Redis commands."""

    def check_usable(self, operation: str) -> object:
        """Raise unless the node's block runs and the pool is not shutting down."""


class ScheduleHost(Protocol):
    """What the task of :meth:`Node.schedule <pulse_trio.pool.Node.schedule>` needs."""

    @property
    def pool(self) -> str:
        """The pool's name."""

    @property
    def io(self) -> PoolRedis:
        """The pool's Redis commands (the producer's record of started keys)."""

    async def dispatch_job(self, key: str, payload: bytes) -> None:
        """:meth:`Node.dispatch_job <pulse_trio.pool.Node.dispatch_job>`."""

    async def stop_job(self, key: str) -> None:
        """:meth:`Node.stop_job <pulse_trio.pool.Node.stop_job>`."""
