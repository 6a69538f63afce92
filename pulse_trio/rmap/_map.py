"""The replicated map: a Redis hash mirrored in this process, read locally.

Who mutates what: the local copy (``_content``, ``_revision``) is written only by the map's
own background task (``_run``: snapshots and applied notifications). Writers never touch it;
their writes come back through the subscription like everybody else's.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final

import anyio
import anyio.abc
import attrs
import coredis
from coredis.exceptions import ResponseError

from .._boundary import TRANSIENT_ERRORS, is_transient, leaves
from .._errors import ClientConfigurationError, ClosedError, PulseError, RedisUnavailableError
from .._lua import bind_script
from .._names import ttl_script_args, validate_duration, validate_name
from .._retry import backoff_delay
from .._tasks import owned_task_group
from ._protocol import (
    KIND_FIELD,
    REV_FIELD,
    Action,
    DecodeError,
    EventKind,
    Message,
    MessageKind,
    classify,
    content_key,
    decode_message,
    parse_values,
    snapshot_from_hash,
    updates_channel,
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
_SCRIPTS = (
    "rmap_set",
    "rmap_set_if_not_exists",
    "rmap_test_and_set",
    "rmap_inc",
    "rmap_append",
    "rmap_remove",
    "rmap_delete",
    "rmap_reset",
)
Client = coredis.Redis[bytes] | coredis.RedisCluster[bytes]


class RMapError(PulseError):
    """Root of the errors specific to replicated maps."""


class InvalidKeyError(RMapError, ValueError):
    """A key is empty, contains ``=``, or is not a ``str``.

    Attributes:
        key: The rejected key.
    """

    def __init__(self, key: object, rule: str) -> None:
        self.key = key
        super().__init__(f"invalid map key {key!r}: {rule}")


class MapClosedError(RMapError, ClosedError):
    """A write on a map whose ``async with rmap.join(...)`` block has exited.

    Reads keep returning the last state; join the map again to write.
    """


class MapValueError(RMapError, ValueError):
    """The stored value is not what the operation needs (nothing was changed).

    For example :meth:`Map.inc` on a value that is not an integer, or a list operation on a
    value that is a JSON document other than a list of strings.

    Attributes:
        key: The key whose value was unsuitable.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


def _validate_key(key: object) -> str:
    if not isinstance(key, str):
        raise InvalidKeyError(key, f"keys are str, not {type(key).__name__}")
    if not key:
        raise InvalidKeyError(key, "keys must not be empty")
    if "=" in key:
        raise InvalidKeyError(key, "keys must not contain '=' (reserved for =rev and =kind)")
    return key


def _validate_value(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"map {what} must be a str, not {type(value).__name__}")
    return value


def _text(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    return raw.decode("utf-8", errors="surrogateescape") if isinstance(raw, bytes) else raw


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


class Map:
    """One process's replica of a replicated map. Create it with :func:`join`.

    Reads (:meth:`get`, :meth:`keys`, ``len(m)``, ...) are local and never touch Redis.
    Writes run one Lua script each in Redis; they are visible locally once the notification
    comes back (use :meth:`set_and_wait` to wait for that).
    """

    def __init__(
        self,
        client: Client,
        name: str,
        *,
        ttl: float | None = None,
        sliding_ttl: float | None = None,
        logger: logging.Logger | None = None,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        ping_timeout: float = DEFAULT_PING_TIMEOUT,
    ) -> None:
        self._name = validate_name("map", name)
        ttl = validate_duration("ttl", ttl, allow_zero=False)
        sliding_ttl = validate_duration("sliding_ttl", sliding_ttl, allow_zero=False)
        if ttl is not None and sliding_ttl is not None:
            raise ValueError("give ttl (absolute) or sliding_ttl, not both")
        self._ping_interval: float = (
            validate_duration("ping_interval", ping_interval, allow_zero=False)
            or DEFAULT_PING_INTERVAL
        )
        self._ping_timeout: float = (
            validate_duration("ping_timeout", ping_timeout, allow_zero=False)
            or DEFAULT_PING_TIMEOUT
        )
        if getattr(client, "decode_responses", False):
            raise ClientConfigurationError(
                "pulse-trio needs a coredis client created with decode_responses=False "
                "(pulse_trio.connect() creates one)"
            )
        self._client = client
        self._log = logger or _LOGGER
        self._key = content_key(name)
        self._channel = updates_channel(name)
        self._ttl_args = ttl_script_args(ttl, sliding_ttl)
        self._scripts = {
            name: bind_script(client, name, prelude="rmap_prelude") for name in _SCRIPTS
        }
        self._content: dict[str, str] = {}
        self._revision = 0
        self._closed = False
        self._connected = False
        self._subscriptions: set[Subscription] = set()
        self._waiters: list[_Waiter] = []
        self._syncs_started = 0
        self._resyncs = 0
        self._reconnects = 0
        self._applied = 0

    # ----------------------------------------------------------------- local reads

    @property
    def name(self) -> str:
        """The map's name."""
        return self._name

    @property
    def revision(self) -> int:
        """The revision of the local copy (0 before the first write to the map)."""
        return self._revision

    @property
    def closed(self) -> bool:
        """Whether the ``async with`` block that joined the map has exited."""
        return self._closed

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
        state = "closed" if self._closed else ("connected" if self._connected else "reconnecting")
        return (
            f"<rmap.Map {self._name!r} {state} revision={self._revision} "
            f"keys={len(self._content)} subscribers={len(self._subscriptions)}>"
        )

    # ----------------------------------------------------------------- writes

    async def _call(self, script: str, op: str, key: str, *args: str) -> Any:
        if self._closed:
            raise MapClosedError(f"map {self._name!r} was left: {op} is not possible any more")
        try:
            return await self._scripts[script](
                keys=[self._key], args=[self._channel, *self._ttl_args, key, *args]
            )
        except ResponseError as exc:
            message = str(exc)
            for marker in ("PULSE_NOT_AN_INTEGER", "PULSE_NOT_A_LIST"):
                if marker in message:
                    detail = message.split(marker, 1)[1].strip()
                    raise MapValueError(
                        key, f"map {self._name!r}: {op} failed: {detail}; nothing was changed"
                    ) from exc
            raise
        except TRANSIENT_ERRORS as exc:
            raise RedisUnavailableError(
                f"map {self._name!r}: {op} of key {key!r} failed, Redis is unreachable "
                f"({exc}); local reads still work, retry the write later"
            ) from exc

    async def set(self, key: str, value: str) -> str | None:
        """Set ``key`` to ``value``.

        Returns:
            The previous value, ``None`` if the key was absent.

        Raises:
            InvalidKeyError: Bad key (before any I/O).
            MapClosedError: The map was left.
            RedisUnavailableError: Redis is unreachable.
        """
        existed, previous, _ = await self._set(key, value)
        return previous if existed else None

    async def _set(self, key: str, value: str) -> tuple[bool, str, int]:
        _validate_key(key)
        _validate_value("values", value)
        existed, previous, revision = await self._call("rmap_set", "set", key, value)
        return bool(existed), _text(previous) or "", int(revision)

    async def set_and_wait(self, key: str, value: str) -> str | None:
        """Set ``key`` and return once this replica reflects the write.

        "Reflects" means the local copy reached the write's revision (or was re-read from
        Redis after it): a later write by someone else may already have replaced the value.

        Returns:
            The previous value, ``None`` if the key was absent.

        Raises:
            InvalidKeyError: Bad key (before any I/O).
            MapClosedError: The map was left, before or while waiting.
            RedisUnavailableError: Redis is unreachable.
        """
        existed, previous, revision = await self._set(key, value)
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
        """
        _validate_key(key)
        _validate_value("values", value)
        return bool(await self._call("rmap_set_if_not_exists", "set_if_not_exists", key, value))

    async def test_and_set(self, key: str, test: str, value: str) -> str | None:
        """Set ``key`` to ``value`` only if its current value equals ``test``.

        Returns:
            The value found (the swap happened iff it equals ``test``); ``None`` if absent
            (an absent key never matches).
        """
        _validate_key(key)
        _validate_value("test values", test)
        _validate_value("values", value)
        return _text(await self._call("rmap_test_and_set", "test_and_set", key, test, value))

    async def inc(self, key: str, delta: int = 1) -> int:
        """Add ``delta`` to the integer stored at ``key`` (an absent key counts as 0).

        Returns:
            The new value.

        Raises:
            MapValueError: The stored value is not an integer, or the result overflows a
                signed 64-bit integer; nothing was changed.
        """
        _validate_key(key)
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError(f"delta must be an int, not {type(delta).__name__}")
        return int(await self._call("rmap_inc", "inc", key, str(delta)))

    async def append_values(self, key: str, *values: str) -> list[str]:
        """Append ``values`` to the list stored at ``key`` (duplicates allowed).

        Lists are stored as JSON arrays of strings, as goa.design/pulse stores them.

        Returns:
            The list after the call (empty if the key is absent and no value was given).

        Raises:
            MapValueError: The stored value is JSON but not a list of strings.
        """
        return await self._append(key, values, unique=False)

    async def append_unique_values(self, key: str, *values: str) -> list[str]:
        """Append the ``values`` not already in the list stored at ``key``.

        Returns:
            The list after the call.
        """
        return await self._append(key, values, unique=True)

    async def _append(self, key: str, values: tuple[str, ...], *, unique: bool) -> list[str]:
        _validate_key(key)
        for value in values:
            _validate_value("list items", value)
        op = "append_unique_values" if unique else "append_values"
        raw = _text(await self._call("rmap_append", op, key, "1" if unique else "0", *values))
        return [] if raw is None else parse_values(raw)

    async def remove_values(self, key: str, *values: str) -> tuple[list[str] | None, bool]:
        """Remove every occurrence of each of ``values`` from the list stored at ``key``.

        Removing the last item deletes the key.

        Returns:
            ``(remaining list or None if the key is now absent, whether anything was removed)``.
        """
        _validate_key(key)
        for value in values:
            _validate_value("list items", value)
        raw, removed = await self._call("rmap_remove", "remove_values", key, *values)
        text = _text(raw)
        return (None if text is None else parse_values(text)), bool(removed)

    async def delete(self, key: str) -> str | None:
        """Delete ``key``.

        Returns:
            The previous value, ``None`` if it was absent (then nothing is published).
        """
        _validate_key(key)
        return _text(await self._call("rmap_delete", "delete", key, "0", ""))

    async def test_and_delete(self, key: str, test: str) -> str | None:
        """Delete ``key`` only if its value equals ``test``.

        Returns:
            The value found (deleted iff it equals ``test``); ``None`` if absent.
        """
        _validate_key(key)
        _validate_value("test values", test)
        return _text(await self._call("rmap_delete", "test_and_delete", key, "1", test))

    async def test_and_reset(self, expected: Mapping[str, str]) -> bool:
        """Reset the map only if every key of ``expected`` holds the given value.

        An absent key never matches. An empty mapping resets unconditionally.

        Returns:
            Whether the map was reset.
        """
        keys = [_validate_key(k) for k in expected]
        tests = [_validate_value("test values", expected[k]) for k in keys]
        return bool(await self._call("rmap_reset", "test_and_reset", "reset", *keys, *tests))

    async def reset(self) -> None:
        """Remove every key. The revision counter survives (kept in a tombstone)."""
        await self._call("rmap_reset", "reset", "reset")

    async def destroy(self) -> None:
        """Remove every key and mark the map destroyed (replicas see a RESET).

        As in goa.design/pulse the hash keeps a two-field tombstone (``=rev``, ``=kind``), so
        that a later use of the same name keeps revisions increasing.
        """
        await self._call("rmap_reset", "destroy", "destroy")

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
        if self._closed:
            raise MapClosedError(f"map {self._name!r} was left: cannot subscribe")
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
        raw = await self._client.hgetall(self._key)
        content, revision, stored_kind = snapshot_from_hash(raw)
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

    async def _stored_revision(self) -> int:
        raw = await self._client.hget(self._key, REV_FIELD)
        text = _text(raw)
        return int(text) if text and text.isdigit() else 0

    async def _listen(self, pubsub: Any) -> None:
        last_received: int | None = None
        confirmations = 0
        async for item in pubsub:
            kind = _text(item["type"])
            if kind == "subscribe":
                confirmations += 1
                if confirmations > 1:
                    # The client re-subscribed on its own: anything published meanwhile is
                    # lost, so re-read everything.
                    raise _Resync("the subscription was re-established")
                continue
            if kind != "message":
                continue
            data = item["data"]
            try:
                message = decode_message(data if isinstance(data, bytes) else data.encode())
            except DecodeError as exc:
                self._log.error(
                    "rmap %s: undecodable notification %r (%s); resyncing",
                    self._name,
                    data[:200],
                    exc,
                    extra={"map": self._name, "reason": str(exc)},
                )
                raise _Resync(f"undecodable notification: {exc}") from exc
            action = classify(self._revision, last_received, message.revision)
            last_received = message.revision
            if action is Action.VERIFY:
                stored = await self._stored_revision()
                action = Action.RESYNC if stored < self._revision else Action.DROP
            if action is Action.APPLY:
                self._apply(message)
            elif action is Action.RESYNC:
                raise _Resync(
                    f"received revision {message.revision} while at {self._revision} "
                    "(lost notifications or a reset counter)"
                )
        raise _Resync("the subscription ended")

    async def _health(self, pubsub: Any) -> None:
        """Fail when the subscribed connection stops answering; resync on a stale revision."""
        behind_since: int | None = None
        next_check = anyio.current_time() + self._ping_interval
        while True:
            await anyio.sleep_until(next_check)
            next_check += self._ping_interval
            try:
                with anyio.fail_after(self._ping_timeout):
                    await pubsub.connection.create_request(b"PING")
                    stored = await self._stored_revision()
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

    async def _session(self, on_ready: Callable[[], None] | None) -> None:
        async with self._client.pubsub(
            channels=[self._channel],
            retry_policy=None,  # we reconnect ourselves, and resync every time
            max_idle_seconds=math.inf,  # our own health check replaces coredis's keepalive
        ) as pubsub:
            try:
                await self._load_snapshot()
                self._connected = True
                if on_ready is not None:
                    on_ready()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._health, pubsub)
                    await self._listen(pubsub)
            finally:
                # A session only ends on a fault, a resync or the map's exit; in the first two
                # cases the socket may be dead or half-open, and coredis would hand it to the
                # next subscription. It is dedicated to us anyway: never return it to the pool.
                with contextlib.suppress(Exception):
                    pubsub.connection.invalidate("rmap subscription ended")

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        started = False
        failures = 0

        def ready() -> None:
            nonlocal started
            started = True
            task_status.started()

        while True:
            try:
                await self._session(None if started else ready)
            except Exception as exc:
                self._connected = False
                if not started:
                    if is_transient(exc):
                        raise RedisUnavailableError(
                            f"cannot join map {self._name!r}: Redis is unreachable ({exc!r})"
                        ) from exc
                    raise
                parts = leaves(exc)
                resyncs = [p for p in parts if isinstance(p, _Resync)]
                if resyncs and all(isinstance(p, (_Resync, *TRANSIENT_ERRORS)) for p in parts):
                    self._log.info(
                        "rmap %s: resyncing: %s",
                        self._name,
                        resyncs[0].reason,
                        extra={"map": self._name, "reason": resyncs[0].reason},
                    )
                    failures = 0
                    delay = 0.0
                elif is_transient(exc):
                    delay = backoff_delay(failures, cap=MAX_RECONNECT_DELAY)
                    self._log.warning(
                        "rmap %s: subscription lost (%r); reconnecting in %.2fs",
                        self._name,
                        parts[0],
                        delay,
                        extra={"map": self._name, "error": repr(parts[0]), "delay": delay},
                    )
                    failures += 1
                else:
                    raise
                self._reconnects += 1
                if delay:
                    await anyio.sleep(delay)
                continue
            finally:
                self._connected = False

    def _close(self) -> None:
        self._closed = True
        self._connected = False
        for subscription in list(self._subscriptions):
            subscription._close()
        for waiter in self._waiters:
            waiter.event.set()


@contextlib.asynccontextmanager
async def join(
    client: Client,
    name: str,
    *,
    ttl: float | None = None,
    sliding_ttl: float | None = None,
    logger: logging.Logger | None = None,
    ping_interval: float = DEFAULT_PING_INTERVAL,
    ping_timeout: float = DEFAULT_PING_TIMEOUT,
) -> AsyncIterator[Map]:
    """Join the replicated map ``name`` and keep a local copy of it up to date.

    The block starts once the map is subscribed and its content loaded (subscribe first,
    then snapshot, then apply only notifications newer than the snapshot). The replica
    resyncs (resubscribes and re-reads the hash) whenever it may have missed a write: a gap
    or regression in revisions, a reconnection, a dead subscription (PING unanswered within
    ``ping_timeout``), an undecodable notification, or a stored revision that went backwards
    (the hash expired).

    Args:
        client: An entered coredis client (``decode_responses=False``); never closed here.
        name: 1 to 512 characters, none of space, NUL, ``*``, ``?``, ``[``, ``]``.
        ttl: Absolute time to live of the hash, in seconds: set when the hash has none, so it
            expires that long after its creation (or last reset). ``None``: no expiry.
        sliding_ttl: Sliding time to live, in seconds: refreshed by every write. Give at most
            one of ``ttl`` and ``sliding_ttl``.
        logger: Where to log; default ``logging.getLogger("pulse_trio.rmap")``.
        ping_interval: Seconds between health checks of the subscription.
        ping_timeout: Seconds a health check may take before the connection is replaced.

    Yields:
        The :class:`Map`.

    Raises:
        pulse_trio.InvalidNameError: Bad name (before any I/O).
        ValueError: Bad durations (before any I/O).
        pulse_trio.RedisUnavailableError: Redis cannot be reached while joining.

    Cancellation:
        The map's background task (subscription, health checks) lives in a task group owned
        by this block; leaving the block, also by cancellation, stops it before returning.
        After the block, reads return the last state and writes raise
        :class:`MapClosedError`. The replica uses one dedicated pool connection for its
        subscription while the block runs.
    """
    replica = Map(
        client,
        name,
        ttl=ttl,
        sliding_ttl=sliding_ttl,
        logger=logger,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
    )
    async with owned_task_group() as tg:
        await tg.start(replica._run)
        replica._log.info(
            "rmap %s: joined at revision %d with %d keys",
            name,
            replica.revision,
            len(replica),
            extra={"map": name, "revision": replica.revision, "keys": len(replica)},
        )
        try:
            yield replica
        finally:
            replica._close()
            replica._log.info("rmap %s: left", name, extra={"map": name})
