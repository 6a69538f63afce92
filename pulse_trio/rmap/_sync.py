"""Keeping a replica converged: the map's one background task (subscribe, snapshot, apply).

:class:`Synchronizer` is where the map's convergence guarantee lives: after any fault the
local copy (:class:`~._replica.Replica`) comes back to Redis's content.

- Join is consistent: subscribe first, then read the snapshot, then apply only notifications
  newer than it (:func:`~._protocol.classify`).
- A notification that arrives while the task waits for one is applied by the subscription's
  handler (:meth:`Synchronizer._take`) in the subscriber connection's reader task: a change
  then crosses two tasks (that reader, the consumer), not three. The task itself takes the
  notifications that arrive while it is busy (they are queued, in order) and those that need
  a round trip or end the session.
- A gap or regression in revisions, an undecodable notification, or a reconnection of the
  subscriber connection (the transport reports it as a :class:`~pulse_trio._redis.Resubscribed`
  item; notifications published meanwhile are lost) makes the replica re-read the hash while
  still subscribed (a resync, :class:`_Resync`).
- A health check PINGs the subscriber connection (``sub.ping()``) within ``ping_timeout``,
  tighter than the transport's own check, and replaces a subscription that does not answer
  (half-open); it also resyncs when the stored revision is below the local one (the hash
  expired) or stays above it.
- Faults of Redis are retried with jittered backoff; a first join that cannot reach Redis
  fails the ``async with`` instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Final

import anyio
import anyio.abc

from .. import _metrics
from .._boundary import Client, display, is_transient, leaves, map_redis_errors
from .._errors import RedisUnavailableError
from .._redis import Message as _RedisMessage
from .._redis import Resubscribed
from .._redis import Subscription as _RedisSubscription
from .._retry import backoff_delay
from ._ops import MapOps
from ._protocol import Action, DecodeError, classify, decode_message
from ._replica import Replica

#: Longest wait between two reconnection attempts, in seconds.
MAX_RECONNECT_DELAY: Final = 5.0


class _Resync(Exception):
    """The local copy may have missed writes: resubscribe and re-read the hash."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Synchronizer:
    """Subscribes to a map's channel and keeps its :class:`Replica` equal to the hash."""

    def __init__(
        self,
        client: Client,
        ops: MapOps,
        replica: Replica,
        *,
        logger: logging.Logger,
        ping_interval: float,
        ping_timeout: float,
    ) -> None:
        self._client = client
        self._ops = ops
        self._replica = replica
        self._name = ops.name
        self._log = logger
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        #: Whether the subscription is up and notifications are being applied.
        self.connected = False
        #: Subscriptions re-established after a fault.
        self.reconnects = 0
        #: Why the next snapshot is loaded (the metrics' resync reason).
        self._reason = "initial"
        self._cell = _metrics.map_cell(self._name)
        #: The revision of the last notification received on the current subscription
        #: (``None`` right after it (re)started), for :func:`~._protocol.classify`.
        self._last_received: int | None = None

    async def _load_snapshot(self) -> None:
        """Replace the local copy with the hash's content (the subscription is already up)."""
        self._replica.begin_sync()
        content, revision, stored_kind = await self._ops.read_all()
        self._replica.load(content, revision, stored_kind)
        resyncs = self._cell.resyncs
        resyncs[self._reason] = resyncs.get(self._reason, 0) + 1

    def _take(self, message: _RedisMessage) -> bool:
        """Apply or drop ``message`` if that needs no I/O; ``False`` leaves it to the task.

        The subscription's handler (:meth:`~pulse_trio._redis.Subscription.set_handler`): it
        runs in the subscriber connection's reader task for a notification that arrives
        while :meth:`_listen` waits for one, so that the replica is updated (and its waiters
        woken) without a task switch. The notifications that need a round trip (a revision to
        verify) or end the session (a resync, an undecodable one) go to :meth:`_listen`.
        """
        try:
            decoded = decode_message(message.data)
        except DecodeError:
            return False
        action = classify(self._replica.revision, self._last_received, decoded.revision)
        if action is Action.APPLY:
            self._last_received = decoded.revision
            self._replica.apply(decoded)
            return True
        if action is Action.DROP:
            self._last_received = decoded.revision
            return True
        return False

    async def _listen(self, sub: _RedisSubscription) -> None:
        """Apply the notifications of ``sub``; raise :class:`_Resync` when one may be lost.

        Most are applied by :meth:`_take` in the subscription's reader task; the others, and
        those that arrived while this task was busy (the snapshot, a verification), come here.
        """
        replica = self._replica
        self._last_received = None
        sub.set_handler(self._take)
        try:
            async for item in sub:
                if isinstance(item, Resubscribed):
                    # The transport lost the subscriber connection and subscribed again on a
                    # new one: anything published in between is lost, so re-read everything.
                    self.connected = False
                    self.reconnects += 1
                    raise _Resync("the subscriber connection was re-established")
                if self._take(item):
                    continue  # applied or dropped, as the handler does
                # Undecodable, or a revision to verify or past a gap.
                data = item.data
                try:
                    message = decode_message(data)
                except DecodeError as exc:
                    self._log.error(
                        "rmap %s: undecodable notification %s (%s); resyncing",
                        self._name,
                        display(data),
                        exc,
                        extra={"map": self._name, "reason": str(exc)},
                    )
                    raise _Resync(f"undecodable notification: {exc}") from exc
                action = classify(replica.revision, self._last_received, message.revision)
                self._last_received = message.revision
                if action is Action.VERIFY:
                    stored = await self._ops.stored_revision()
                    action = Action.RESYNC if stored < replica.revision else Action.DROP
                if action is Action.RESYNC:
                    raise _Resync(
                        f"received revision {message.revision} while at {replica.revision} "
                        "(lost notifications or a reset counter)"
                    )
        finally:
            sub.set_handler(None)
        raise _Resync("the subscription ended")

    async def _health(self, sub: _RedisSubscription) -> None:
        """Fail when the subscribed connection stops answering; resync on a stale revision.

        A PING left unanswered for ``ping_timeout`` (a half-open connection) ends the session
        with a ``TimeoutError``: the subscription is closed and a new one opened. While the
        transport is itself reconnecting the subscriber, the map only reports itself
        disconnected: the :class:`Resubscribed` item that follows makes it resync.
        """
        behind_since: int | None = None
        next_check = anyio.current_time() + self._ping_interval
        while True:
            await anyio.sleep_until(next_check)
            next_check = max(next_check + self._ping_interval, anyio.current_time())
            try:
                with anyio.fail_after(self._ping_timeout):
                    try:
                        await sub.ping()
                    except RedisUnavailableError:
                        # No subscriber connection right now (the transport is reconnecting).
                        self.connected = False
                        behind_since = None
                        continue
                    stored = await self._ops.stored_revision()
            except TimeoutError:
                raise TimeoutError(
                    f"the subscription did not answer a PING within {self._ping_timeout}s"
                ) from None
            local = self._replica.revision
            if stored < local:
                raise _Resync(f"stored revision {stored} is below the local {local}")
            if stored > local:
                # A notification may be in flight: resync only if we are still behind at
                # the next check without having moved.
                if behind_since == local:
                    raise _Resync(f"stored revision {stored} stayed above the local one")
                behind_since = local
            else:
                behind_since = None

    async def _session(self, on_synced: Callable[[], None]) -> None:
        """One subscription: snapshot, then apply notifications; resync in place when needed.

        Subscribe first, then read the snapshot: every write after the snapshot arrives as a
        notification, as long as the subscription stays up (and when it does not, the
        transport says so with a :class:`Resubscribed` item, which makes the map re-read the
        hash). ``on_synced`` is called after every snapshot. Ends only on an error (a fault of
        Redis or of the connection) or cancellation.
        """
        async with contextlib.AsyncExitStack() as stack:
            # A denial (an ACL without the channel) names the command and the channel.
            channel = self._ops.channel
            with map_redis_errors(f"map {self._name!r}: SUBSCRIBE {channel}"):
                sub = await stack.enter_async_context(self._client.subscribe(channel))
            while True:
                await self._load_snapshot()
                self.connected = True
                on_synced()
                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._health, sub)
                        await self._listen(sub)
                except BaseException as exc:
                    parts = leaves(exc)
                    if not all(isinstance(part, _Resync) for part in parts):
                        if isinstance(exc, Exception) or not isinstance(exc, BaseExceptionGroup):
                            raise
                        # A cancellation (the map is left) together with a resync that was
                        # starting: leave, without the internal _Resync.
                        rest = exc.split(_Resync)[1]
                        if rest is None:  # pragma: no cover - not all parts were _Resync
                            raise
                        raise rest from None
                    reason = next(p for p in parts if isinstance(p, _Resync)).reason
                    self._reason = "inconsistency"
                    self._log.info(
                        "rmap %s: resyncing: %s",
                        self._name,
                        reason,
                        extra={"map": self._name, "reason": reason},
                    )

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Keep the replica converged until cancelled; started once the first snapshot is in.

        Raises:
            pulse_trio.RedisUnavailableError: Redis cannot be reached for the first snapshot.
        """
        started = False
        failures = 0

        def synced() -> None:
            nonlocal started, failures
            failures = 0
            if not started:
                started = True
                task_status.started()

        while True:
            try:
                await self._session(synced)
            except Exception as exc:
                self.connected = False
                if not started:
                    if is_transient(exc):
                        raise RedisUnavailableError(
                            f"cannot join map {self._name!r}: Redis is unreachable ({exc!r})"
                        ) from exc
                    raise
                parts = leaves(exc)
                if not all(isinstance(p, _Resync) or is_transient(p) for p in parts):
                    raise
                # A fault of Redis or of the subscriber connection (maybe together with a
                # resync that was starting): open a new subscription, then re-read the hash.
                delay = backoff_delay(failures, cap=MAX_RECONNECT_DELAY)
                failures += 1
                self._reason = "reconnect"
                fault = next((p for p in parts if not isinstance(p, _Resync)), parts[0])
                self._log.warning(
                    "rmap %s: subscription lost (%r); reconnecting in %.2fs",
                    self._name,
                    fault,
                    delay,
                    extra={"map": self._name, "error": repr(fault), "delay": delay},
                )
                self.reconnects += 1
                await anyio.sleep(delay)
            finally:
                self.connected = False
