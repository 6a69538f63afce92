"""The replicated map: a Redis hash mirrored in this process, read locally.

Who mutates what: the local copy (``_content``, ``_revision``) is written only by the map's
own background task (``_run``: snapshots and applied notifications). Writers never touch it;
their writes come back through the subscription like everybody else's.

The subscription is the transport's (``client.subscribe``): it reconnects on its own and
reports each reconnection as a :class:`~pulse_trio._redis.Resubscribed` item, after which the
map re-reads the hash (notifications published meanwhile are lost). The map's own health
check PINGs the subscriber connection (``sub.ping()``) within ``ping_timeout``, tighter than
the transport's, and replaces a subscription that does not answer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Final

import anyio
import anyio.abc
import attrs

from .._boundary import Client, display, is_transient, leaves
from .._errors import RedisUnavailableError
from .._lifecycle import Service
from .._names import validate_duration, validate_name
from .._redis import Resubscribed
from .._redis import Subscription as _RedisSubscription
from .._retry import backoff_delay
from ._errors import MapClosedError
from ._ops import MapOps
from ._protocol import (
    KIND_FIELD,
    REV_FIELD,
    Action,
    DecodeError,
    EventKind,
    Message,
    MessageKind,
    classify,
    decode_message,
    parse_values,
)

#: Seconds between two health checks of the subscription (a PING on the subscribed
#: connection, plus a look at the stored revision).
DEFAULT_PING_INTERVAL: Final = 5.0
#: Seconds within which the PONG (and the revision read) must arrive; otherwise the
#: connection is taken as dead (half-open) and replaced.
DEFAULT_PING_TIMEOUT: Final = 3.0
#: Longest wait between two reconnection attempts, in seconds.
MAX_RECONNECT_DELAY: Final = 5.0

_LOGGER = logging.getLogger("pulse_trio.rmap")


class _Resync(Exception):
    """The local copy may have missed writes: resubscribe and re-read the hash."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class MapStatistics:
    """A snapshot of a map replica's state, from :meth:`Map.statistics`.

    Attributes:
        name: The map's name.
        revision: The local revision.
        keys: How many keys the local copy holds.
        connected: Whether the subscription is up (notifications are being applied).
        resyncs: Snapshots loaded since join (the first one included).
        reconnects: Subscriptions re-established after a fault.
        applied: Notifications applied.
        subscribers: Open :meth:`Map.subscribe` blocks.
    """

    name: str
    revision: int
    keys: int
    connected: bool
    resyncs: int
    reconnects: int
    applied: int
    subscribers: int


class Subscription:
    """Change notifications of one :meth:`Map.subscribe` block.

    Iterate it to receive :class:`EventKind` values. Notifications are coalesced: while the
    consumer is busy, at most one is kept, the strongest missed (RESET > DELETE > CHANGE). The
    map is always already up to date when a notification is received: re-read what you need.
    Iteration ends when the map is left.
    """

    def __init__(self) -> None:
        self._pending: EventKind | None = None
        self._wakeup = anyio.Event()
        self._closed = False

    def _notify(self, kind: EventKind) -> None:
        if self._pending is None or kind > self._pending:
            self._pending = kind
        self._wakeup.set()

    def _close(self) -> None:
        self._closed = True
        self._wakeup.set()

    @property
    def pending(self) -> EventKind | None:
        """The notification waiting to be received, if any."""
        return self._pending

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> EventKind:
        while self._pending is None:
            if self._closed:
                raise StopAsyncIteration
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
        kind, self._pending = self._pending, None
        return kind


@attrs.define
class _Waiter:
    revision: int
    syncs_started: int
    event: anyio.Event = attrs.field(factory=anyio.Event)


class Map(Service):
    """One process's replica of a replicated map. Create it with :func:`join`.

    Reads (:meth:`get`, :meth:`keys`, ``len(m)``, ...) are local and never touch Redis.
    Writes run one Lua script each in Redis; they are visible locally once the notification
    comes back (use :meth:`set_and_wait` to wait for that). Writes work only inside the
    ``async with`` block (before it and after it they raise :class:`MapClosedError`); reads
    return the last state after the block.
    """

    _kind = "map"
    _factory = "rmap.join(client, name)"

    def __init__(
        self,
        ops: MapOps,
        *,
        logger: logging.Logger,
        ping_interval: float,
        ping_timeout: float,
    ) -> None:
        self._ops = ops
        self._name = ops.name
        self._client = ops.client
        self._log = logger
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._content: dict[str, str] = {}
        self._revision = 0
        self._connected = False
        self._subscriptions: set[Subscription] = set()
        self._waiters: list[_Waiter] = []
        self._syncs_started = 0
        self._resyncs = 0
        self._reconnects = 0
        self._applied = 0

    def _closed_error(self, message: str) -> MapClosedError:
        return MapClosedError(f"map {self._name!r}: {message}")

    # ----------------------------------------------------------------- local reads

    @property
    def name(self) -> str:
        """The map's name."""
        return self._name

    @property
    def revision(self) -> int:
        """The revision of the local copy (0 before the first write to the map)."""
        return self._revision

    def get(self, key: str) -> str | None:
        """Return the value of ``key`` in the local copy, ``None`` if absent."""
        return self._content.get(key)

    def get_values(self, key: str) -> list[str] | None:
        """Return the list stored at ``key`` (see :meth:`append_values`), ``None`` if absent.

        A value that is not a JSON list of strings is read as comma-separated items, as
        goa.design/pulse does.
        """
        raw = self._content.get(key)
        return None if raw is None else parse_values(raw)

    def keys(self) -> list[str]:
        """Return the keys of the local copy."""
        return list(self._content)

    def map(self) -> dict[str, str]:
        """Return a copy of the whole local content."""
        return dict(self._content)

    def __len__(self) -> int:
        return len(self._content)

    def __contains__(self, key: object) -> bool:
        return key in self._content

    def statistics(self) -> MapStatistics:
        """Return a snapshot of this replica's state and counters."""
        return MapStatistics(
            name=self._name,
            revision=self._revision,
            keys=len(self._content),
            connected=self._connected,
            resyncs=self._resyncs,
            reconnects=self._reconnects,
            applied=self._applied,
            subscribers=len(self._subscriptions),
        )

    def __repr__(self) -> str:
        state = self._state.value
        if self._state.value == "open":
            state = "connected" if self._connected else "reconnecting"
        return (
            f"<rmap.Map {self._name!r} {state} revision={self._revision} "
            f"keys={len(self._content)} subscribers={len(self._subscriptions)}>"
        )

    # ----------------------------------------------------------------- writes

    def _writer(self, operation: str) -> MapOps:
        """The write layer, once the map is open (raises :class:`MapClosedError` otherwise)."""
        self._check_open(operation)
        return self._ops

    async def set(self, key: str, value: str) -> str | None:
        """Set ``key`` to ``value``.

        Returns:
            The previous value, ``None`` if the key was absent.

        Raises:
            InvalidKeyError: Bad key (before any I/O): empty, with ``=``, not a ``str``, or
                text that would not read back unchanged (a lone surrogate such as
                ``"\\ud800"``; see :mod:`pulse_trio._names`).
            InvalidValueError: ``value`` is text that would not read back unchanged (before
                any I/O; the same rule as keys).
            TypeError: ``value`` is not a ``str``.
            MapClosedError: The map is not open.
            pulse_trio.RedisUnavailableError: Redis is unreachable.
        """
        existed, previous, _ = await self._writer("set").set(key, value)
        return previous if existed else None

    async def set_and_wait(self, key: str, value: str) -> str | None:
        """Set ``key`` and return once this replica reflects the write.

        "Reflects" means the local copy reached the write's revision (or was re-read from
        Redis after it): a later write by someone else may already have replaced the value.

        Returns:
            The previous value, ``None`` if the key was absent.

        Raises:
            InvalidKeyError, InvalidValueError, TypeError: As :meth:`set` (before any I/O).
            MapClosedError: The map is not open, or was left while waiting.
            pulse_trio.RedisUnavailableError: Redis is unreachable.
        """
        existed, previous, revision = await self._writer("set_and_wait").set(key, value)
        if self._revision < revision:
            waiter = _Waiter(revision, self._syncs_started)
            self._waiters.append(waiter)
            try:
                await waiter.event.wait()
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if self._revision < revision and waiter.syncs_started == self._syncs_started:
                raise MapClosedError(f"map {self._name!r} was left while waiting for a write")
        return previous if existed else None

    async def set_if_not_exists(self, key: str, value: str) -> bool:
        """Set ``key`` only if it is absent.

        Returns:
            Whether the value was written.

        Raises:
            InvalidKeyError, InvalidValueError, TypeError, MapClosedError,
            pulse_trio.RedisUnavailableError: As :meth:`set`.
        """
        return await self._writer("set_if_not_exists").set_if_not_exists(key, value)

    async def test_and_set(self, key: str, test: str, value: str) -> str | None:
        """Set ``key`` to ``value`` only if its current value equals ``test``.

        Returns:
            The value found (the swap happened iff it equals ``test``); ``None`` if absent
            (an absent key never matches).

        Raises:
            InvalidKeyError, InvalidValueError, TypeError, MapClosedError,
            pulse_trio.RedisUnavailableError: As :meth:`set`.
        """
        return await self._writer("test_and_set").test_and_set(key, test, value)

    async def inc(self, key: str, delta: int = 1) -> int:
        """Add ``delta`` to the integer stored at ``key`` (an absent key counts as 0).

        Returns:
            The new value.

        Raises:
            MapValueError: The stored value is not an integer, or the result overflows a
                signed 64-bit integer; nothing was changed.
            InvalidKeyError, InvalidValueError, TypeError, MapClosedError,
            pulse_trio.RedisUnavailableError: As :meth:`set`.
        """
        return await self._writer("inc").inc(key, delta)

    async def append_values(self, key: str, *values: str) -> list[str]:
        """Append ``values`` to the list stored at ``key`` (duplicates allowed).

        Lists are stored as JSON arrays of strings, as goa.design/pulse stores them.

        Returns:
            The list after the call (empty if the key is absent and no value was given).

        Raises:
            MapValueError: The stored value is JSON but not a list of strings.
            InvalidKeyError, InvalidValueError, TypeError, MapClosedError,
            pulse_trio.RedisUnavailableError: As :meth:`set`.
        """
        return await self._writer("append_values").append(key, values, unique=False)

    async def append_unique_values(self, key: str, *values: str) -> list[str]:
        """Append the ``values`` not already in the list stored at ``key``.

        Returns:
            The list after the call.

        Raises:
            MapValueError, InvalidKeyError, InvalidValueError, TypeError, MapClosedError,
            pulse_trio.RedisUnavailableError: As :meth:`append_values`.
        """
        return await self._writer("append_unique_values").append(key, values, unique=True)

    async def remove_values(self, key: str, *values: str) -> tuple[list[str] | None, bool]:
        """Remove every occurrence of each of ``values`` from the list stored at ``key``.

        Removing the last item deletes the key.

        Returns:
            ``(remaining list or None if the key is now absent, whether anything was removed)``.

        Raises:
            MapValueError, InvalidKeyError, InvalidValueError, TypeError, MapClosedError,
            pulse_trio.RedisUnavailableError: As :meth:`append_values`.
        """
        return await self._writer("remove_values").remove_values(key, values)

    async def delete(self, key: str) -> str | None:
        """Delete ``key``.

        Returns:
            The previous value, ``None`` if it was absent (then nothing is published).

        Raises:
            InvalidKeyError, MapClosedError, pulse_trio.RedisUnavailableError: As :meth:`set`.
        """
        return await self._writer("delete").delete(key)

    async def test_and_delete(self, key: str, test: str) -> str | None:
        """Delete ``key`` only if its value equals ``test``.

        Returns:
            The value found (deleted iff it equals ``test``); ``None`` if absent.

        Raises:
            InvalidKeyError, InvalidValueError, TypeError, MapClosedError,
            pulse_trio.RedisUnavailableError: As :meth:`set`.
        """
        return await self._writer("test_and_delete").test_and_delete(key, test)

    async def test_and_reset(self, expected: Mapping[str, str]) -> bool:
        """Reset the map only if every key of ``expected`` holds the given value.

        An absent key never matches. An empty mapping resets unconditionally.

        Returns:
            Whether the map was reset.

        Raises:
            InvalidKeyError, InvalidValueError, TypeError, MapClosedError,
            pulse_trio.RedisUnavailableError: As :meth:`set`.
        """
        return await self._writer("test_and_reset").test_and_reset(expected)

    async def reset(self) -> None:
        """Remove every key. The revision counter survives (kept in a tombstone).

        Raises:
            MapClosedError, pulse_trio.RedisUnavailableError: As :meth:`set`.
        """
        await self._writer("reset").reset()

    async def destroy(self) -> None:
        """Remove every key and mark the map destroyed (replicas see a RESET).

        As in goa.design/pulse the hash keeps a two-field tombstone (``=rev``, ``=kind``), so
        that a later use of the same name keeps revisions increasing.

        Raises:
            MapClosedError, pulse_trio.RedisUnavailableError: As :meth:`set`.
        """
        await self._writer("destroy").destroy()

    # ----------------------------------------------------------------- subscriptions

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        """Receive a notification after every change applied to this replica.

        Yields:
            A :class:`Subscription`: ``async for kind in changes: ...``. Notifications are
            coalesced (the strongest missed kind); after a resync one notification carries
            what the snapshot changed.

        Raises:
            MapClosedError: The map was already left.
        """
        self._check_open("subscribe")
        subscription = Subscription()
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            subscription._close()

    def _notify(self, kind: EventKind) -> None:
        for subscription in self._subscriptions:
            subscription._notify(kind)

    def _release_waiters(self) -> None:
        for waiter in self._waiters:
            if waiter.revision <= self._revision or waiter.syncs_started < self._syncs_started:
                waiter.event.set()

    # ----------------------------------------------------------------- background task

    def _apply(self, message: Message) -> None:
        self._revision = message.revision
        key = message.key
        if message.kind is MessageKind.SET:
            assert key is not None
            assert message.value is not None
            if key not in (REV_FIELD, KIND_FIELD):
                self._content[key] = message.value
        elif message.kind is MessageKind.DEL:
            assert key is not None
            self._content.pop(key, None)
        else:
            self._content.clear()
        self._applied += 1
        self._log.debug(
            "rmap %s: applied %s rev %d",
            self._name,
            message.kind.value,
            message.revision,
            extra={"map": self._name, "op": message.kind.value, "revision": message.revision},
        )
        self._notify(message.event_kind)
        self._release_waiters()

    async def _load_snapshot(self) -> None:
        """Replace the local copy with the hash's content (the subscription is already up)."""
        self._syncs_started += 1
        content, revision, stored_kind = await self._ops.read_all()
        old = self._content
        kind: EventKind | None = None
        if content != old:
            kind = EventKind.DELETE if old.keys() - content.keys() else EventKind.CHANGE
        if revision > self._revision and stored_kind in ("reset", "destroy"):
            kind = EventKind.RESET
        self._content = content
        self._revision = revision
        self._resyncs += 1
        if kind is not None:
            self._notify(kind)
        self._release_waiters()

    async def _listen(self, sub: _RedisSubscription) -> None:
        """Apply the notifications of ``sub``; raise :class:`_Resync` when one may be lost."""
        last_received: int | None = None
        async for item in sub:
            if isinstance(item, Resubscribed):
                # The transport lost the subscriber connection and subscribed again on a new
                # one: anything published in between is lost, so re-read everything.
                self._connected = False
                self._reconnects += 1
                raise _Resync("the subscriber connection was re-established")
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
            action = classify(self._revision, last_received, message.revision)
            last_received = message.revision
            if action is Action.VERIFY:
                stored = await self._ops.stored_revision()
                action = Action.RESYNC if stored < self._revision else Action.DROP
            if action is Action.APPLY:
                self._apply(message)
            elif action is Action.RESYNC:
                raise _Resync(
                    f"received revision {message.revision} while at {self._revision} "
                    "(lost notifications or a reset counter)"
                )
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
                        self._connected = False
                        behind_since = None
                        continue
                    stored = await self._ops.stored_revision()
            except TimeoutError:
                raise TimeoutError(
                    f"the subscription did not answer a PING within {self._ping_timeout}s"
                ) from None
            if stored < self._revision:
                raise _Resync(f"stored revision {stored} is below the local {self._revision}")
            if stored > self._revision:
                # A notification may be in flight: resync only if we are still behind at
                # the next check without having moved.
                if behind_since == self._revision:
                    raise _Resync(f"stored revision {stored} stayed above the local one")
                behind_since = self._revision
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
        async with self._client.subscribe(self._ops.channel) as sub:
            while True:
                await self._load_snapshot()
                self._connected = True
                on_synced()
                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._health, sub)
                        await self._listen(sub)
                except Exception as exc:
                    parts = leaves(exc)
                    if not all(isinstance(part, _Resync) for part in parts):
                        raise
                    reason = next(p for p in parts if isinstance(p, _Resync)).reason
                    self._log.info(
                        "rmap %s: resyncing: %s",
                        self._name,
                        reason,
                        extra={"map": self._name, "reason": reason},
                    )

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
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
                self._connected = False
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
                fault = next((p for p in parts if not isinstance(p, _Resync)), parts[0])
                self._log.warning(
                    "rmap %s: subscription lost (%r); reconnecting in %.2fs",
                    self._name,
                    fault,
                    delay,
                    extra={"map": self._name, "error": repr(fault), "delay": delay},
                )
                self._reconnects += 1
                await anyio.sleep(delay)
            finally:
                self._connected = False

    # ----------------------------------------------------------------- lifecycle

    async def _start(self, tg: anyio.abc.TaskGroup) -> None:
        await tg.start(self._run)
        self._log.info(
            "rmap %s: joined at revision %d with %d keys",
            self._name,
            self._revision,
            len(self._content),
            extra={"map": self._name, "revision": self._revision, "keys": len(self._content)},
        )

    async def _stop(self) -> None:
        self._release_all()

    def _finish(self) -> None:
        self._connected = False
        self._release_all()
        self._log.info("rmap %s: left", self._name, extra={"map": self._name})

    def _release_all(self) -> None:
        """End every subscription and wake every waiter (the map is being left)."""
        for subscription in list(self._subscriptions):
            subscription._close()
        for waiter in self._waiters:
            waiter.event.set()


def join(
    client: Client,
    name: str,
    *,
    ttl: float | None = None,
    sliding_ttl: float | None = None,
    logger: logging.Logger | None = None,
    ping_interval: float = DEFAULT_PING_INTERVAL,
    ping_timeout: float = DEFAULT_PING_TIMEOUT,
) -> Map:
    """Return a replica of the map ``name``, to enter with ``async with``.

    ``async with rmap.join(client, "config") as m:`` starts once the map is subscribed and
    its content loaded (subscribe first, then snapshot, then apply only notifications newer
    than the snapshot). The replica resyncs (re-reads the hash while subscribed) whenever it
    may have missed a write: a gap or regression in revisions, a reconnection of its
    subscriber connection (which the transport resubscribes first), a dead subscription
    (PING unanswered within ``ping_timeout``: the subscription is replaced by a new one), an
    undecodable notification, or a stored revision that went backwards (the hash expired).

    Args:
        client: An open :class:`pulse_trio.Client` (from :func:`pulse_trio.connect`); never
            closed here.
        name: 1 to 512 characters, none of space, NUL, ``*``, ``?``, ``[``, ``]``.
        ttl: Absolute time to live of the hash, in seconds: set when the hash has none, so it
            expires that long after its creation (or last reset). ``None``: no expiry.
        sliding_ttl: Sliding time to live, in seconds: refreshed by every write. Give at most
            one of ``ttl`` and ``sliding_ttl``.
        logger: Where to log; default ``logging.getLogger("pulse_trio.rmap")``.
        ping_interval: Seconds between health checks of the subscription.
        ping_timeout: Seconds a health check may take before the connection is replaced.

    Returns:
        The :class:`Map`, not yet joined: enter it (once) with ``async with``.

    Raises:
        pulse_trio.InvalidNameError: Bad name (here, before any I/O), including one that is
            not strict UTF-8 text (a surrogate code point: see :mod:`pulse_trio._names`).
        ValueError: Bad durations (here, before any I/O).
        TypeError: ``client`` is not a :class:`pulse_trio.Client` (here, before any I/O).
        pulse_trio.RedisUnavailableError: Redis cannot be reached when the block is entered.

    Cancellation:
        The map's background task (subscription, health checks) lives in a task group owned
        by the map's block; leaving the block, also by cancellation, stops it before
        returning. After the block, reads return the last state and writes raise
        :class:`MapClosedError`. The replica holds one subscriber connection of its own
        (``client.subscribe``, outside the client's pool of blocking connections) while the
        block runs; its reads and writes share the client's multiplexed connection.
    """
    validate_name("map", name)
    interval = _positive("ping_interval", ping_interval)
    timeout = _positive("ping_timeout", ping_timeout)
    ops = MapOps.create(client, name, ttl=ttl, sliding_ttl=sliding_ttl)
    return Map._create(ops, logger=logger or _LOGGER, ping_interval=interval, ping_timeout=timeout)


def _positive(what: str, seconds: float) -> float:
    checked = validate_duration(what, seconds, allow_zero=False)
    if checked is None:
        raise ValueError(f"{what} must be a number of seconds > 0, not None")
    return checked
