"""The replicated map's public face: :class:`Map` and :func:`join`.

A :class:`Map` composes three parts, each in its own module: the local copy and its waiters
(:class:`~._replica.Replica`), the background task that keeps that copy converged with Redis
(:class:`~._sync.Synchronizer`: subscribe, snapshot, apply, resync, health checks), and the
stateless write layer (:class:`~._ops.MapOps`: one Lua script per write). Reads are served
from the replica's content dict directly; writes go through the ops and come back through
the subscription like everybody else's.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Final

import anyio.abc
import attrs

from .. import _metrics
from .._boundary import Client
from .._lifecycle import Service
from .._names import validate_duration, validate_logger, validate_name
from ._errors import MapClosedError
from ._ops import MapOps
from ._protocol import parse_values
from ._replica import Replica
from ._subscription import Subscription
from ._sync import Synchronizer

#: Seconds between two health checks of the subscription (a PING on the subscribed
#: connection, plus a look at the stored revision).
DEFAULT_PING_INTERVAL: Final = 5.0
#: Seconds within which the PONG (and the revision read) must arrive; otherwise the
#: connection is taken as dead (half-open) and replaced.
DEFAULT_PING_TIMEOUT: Final = 3.0

_LOGGER = logging.getLogger("pulse_trio.rmap")


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
        self._log = logger
        self._replica = Replica(ops.name, logger)
        # The replica's dict itself (mutated in place, never replaced): a read is one lookup.
        self._content = self._replica.content
        # Reads are the hot path of a replicated map: ``get`` is the dict's own bound method
        # on each instance (the method below documents it), which halves its cost.
        self.get = self._content.get  # type: ignore[method-assign,assignment]
        self._sync = Synchronizer(
            ops.client,
            ops,
            self._replica,
            logger=logger,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
        )

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
        return self._replica.revision

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
        replica = self._replica
        return MapStatistics(
            name=self._name,
            revision=replica.revision,
            keys=len(replica.content),
            connected=self._sync.connected,
            resyncs=replica.resyncs,
            reconnects=self._sync.reconnects,
            applied=replica.applied,
            subscribers=len(replica.subscriptions),
        )

    def __repr__(self) -> str:
        state = self._state.value
        if self._state.value == "open":
            state = "connected" if self._sync.connected else "reconnecting"
        replica = self._replica
        return (
            f"<rmap.Map {self._name!r} {state} revision={replica.revision} "
            f"keys={len(replica.content)} subscribers={len(replica.subscriptions)}>"
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
        began = time.perf_counter() if _metrics.replica_lag is not None else 0.0
        existed, previous, revision = await self._writer("set").set(key, value)
        if began:
            self._replica.mark_write(revision, began)
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
        if not await self._replica.wait_for(revision):
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
        self._replica.subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._replica.subscriptions.discard(subscription)
            subscription._close()

    # ----------------------------------------------------------------- lifecycle

    async def _start(self, tg: anyio.abc.TaskGroup) -> None:
        await tg.start(self._sync.run)
        revision, keys = self._replica.revision, len(self._content)
        self._log.info(
            "rmap %s: joined at revision %d with %d keys",
            self._name,
            revision,
            keys,
            extra={"map": self._name, "revision": revision, "keys": keys},
        )

    async def _stop(self) -> None:
        self._replica.release_all()

    def _finish(self) -> None:
        self._sync.connected = False
        self._replica.release_all()
        self._log.info("rmap %s: left", self._name, extra={"map": self._name})


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
    validate_logger(logger)
    interval = _positive("ping_interval", ping_interval)
    timeout = _positive("ping_timeout", ping_timeout)
    ops = MapOps.create(client, name, ttl=ttl, sliding_ttl=sliding_ttl)
    return Map._create(ops, logger=logger or _LOGGER, ping_interval=interval, ping_timeout=timeout)


def _positive(what: str, seconds: float) -> float:
    checked = validate_duration(what, seconds, allow_zero=False)
    if checked is None:
        raise ValueError(f"{what} must be a number of seconds > 0, not None")
    return checked
