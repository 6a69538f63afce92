"""What a pool node's collaborators share: small values and helpers, no tasks of their own.

A :class:`~pulse_trio.pool.Node` is a thin face over collaborators (``_dispatch.py``,
``_intake.py``, ``_acks.py``, ``_liveness.py``, ``_placement.py``, ``_shutdown.py``). The
node makes one of each value below and hands every collaborator the ones it needs: the
options, where the node is in stopping its jobs (:class:`Phase`), the membership it knows
(:class:`MembershipView`), the callers waiting for replies (:class:`Waiters`), the trim mark
of its stream (:class:`TrimMark`), its counters, and the retry loop of its background calls
(:class:`Retrier`). Nothing here does I/O but :class:`Retrier`, which only sleeps and calls.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs

from .. import _metrics
from .._boundary import is_transient
from .._retry import backoff_delay
from ._protocol import Membership

#: Entries read from the node's stream per XREAD, and unassigned keys placed per heartbeat.
BATCH = 1000
#: Longest time a shielded cleanup command may take when the node closes, in seconds.
CLEANUP_TIMEOUT = 5.0

#: Start a task in the node's task group (nothing if the node's block is not running).
Spawn = Callable[..., None]


def new_id() -> str:
    """A random id for a node, a worker or a request token."""
    return secrets.token_hex(8)


@attrs.frozen
class Options:
    """The node's options, checked by :func:`~pulse_trio.pool.open_node`."""

    worker_ttl: float
    worker_shutdown_ttl: float
    ack_grace_period: float
    max_queued_jobs: int
    client_only: bool


@attrs.define
class Counters:
    """The counters of :meth:`Node.statistics`, each bumped by the collaborator that counts."""

    dispatched: int = 0
    started: int = 0
    fenced: int = 0
    malformed: int = 0
    #: The pool's metrics cell (process-wide counters of the pool, see ``_metrics``).
    cell: _metrics.PoolCell = attrs.field(factory=lambda: _metrics.pool_cell(""))


@attrs.define
class Phase:
    """Where the node is in stopping its jobs (read by every collaborator, and the workers).

    Attributes:
        closing: The node's block ended (set by the shutdown collaborator's ``close``).
        fenced: The node's lease lapsed and it stopped its jobs (set and cleared by liveness).
        shutting_down: The pool shuts down (set by the shutdown collaborator).
    """

    closing: bool = False
    fenced: bool = False
    shutting_down: bool = False

    @property
    def stopping(self) -> bool:
        """Whether the node stopped (or stops) its jobs: a start arriving now must not run."""
        return self.closing or self.fenced or self.shutting_down


class MembershipView:
    """The pool membership this node knows: replaced by a newer epoch, or by Redis's answer.

    A newer membership wakes :meth:`wait_changed` (the rebalance task).
    """

    def __init__(self) -> None:
        self.current = Membership()
        self._changed = anyio.Event()

    def update(self, membership: Membership, *, from_redis: bool = False) -> None:
        """Keep ``membership`` if its epoch is newer than the one known.

        Args:
            membership: A membership message's, or one a script read from Redis.
            from_redis: It is what a script just read (it answered that the node's epoch is
                not the current one): kept whenever it differs. Messages, which may arrive
                late, only move the view forward; Redis's answer also moves it back, from an
                epoch Redis never reached (written by another program, or lost by Redis in
                a failover), which would otherwise stick.
        """
        if int(membership.epoch) > int(self.current.epoch) or (
            from_redis and membership != self.current
        ):
            self.current = membership
            self._changed.set()

    async def wait_changed(self) -> None:
        """Return once the membership changed since the last return."""
        await self._changed.wait()
        self._changed = anyio.Event()


class TrimMark:
    """Below which entry id the node's stream may be trimmed (sent with the next script)."""

    def __init__(self) -> None:
        self.below = ""

    def take(self) -> str:
        """The mark, reset: each mark is sent once."""
        trim, self.below = self.below, ""
        return trim


class Waiter:
    """A caller waiting for a reply on this node's stream. Registered before the request is
    sent, so a reply can never arrive before its waiter (reference §12 #9)."""

    __slots__ = ("answered", "error", "event", "ok")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.ok = False
        self.error = ""
        #: Set by a reply (not by the node's closing, which only sets the event).
        self.answered = False


class Waiters:
    """The callers of this node waiting for replies, by request token."""

    def __init__(self) -> None:
        self._by_token: dict[str, Waiter] = {}

    def add(self, token: str) -> Waiter:
        """Register a waiter for ``token`` (before the request is sent)."""
        waiter = self._by_token[token] = Waiter()
        return waiter

    def remove(self, token: str) -> None:
        """Forget the waiter of ``token`` (its caller returned)."""
        del self._by_token[token]

    def resolve(self, token: str, ok: bool, error: str) -> None:
        """Hand a reply to the caller waiting on ``token`` (if it still waits)."""
        waiter = self._by_token.get(token)
        if waiter is not None and not waiter.event.is_set():
            waiter.ok = ok
            waiter.error = error
            waiter.answered = True
            waiter.event.set()

    def release_all(self) -> None:
        """Wake every caller (the node closed: each raises its closed error)."""
        for waiter in self._by_token.values():
            waiter.event.set()


@attrs.frozen
class Retrier:
    """Runs a background call until it succeeds, retrying transient Redis errors with backoff
    (capped at a quarter of ``worker_ttl``), logging each failure."""

    pool: str
    node_id: str
    worker_ttl: float
    logger: logging.Logger

    async def __call__(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``call()`` until it succeeds; ``what`` names it in the log."""
        attempt = 0
        while True:
            try:
                return await call()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                delay = backoff_delay(attempt, cap=min(1.0, self.worker_ttl / 4))
                attempt += 1
                self.logger.warning(
                    "pool %s: node %s: %s failed (%r); retrying in %.2fs",
                    self.pool,
                    self.node_id,
                    what,
                    exc,
                    delay,
                )
                await anyio.sleep(delay)
