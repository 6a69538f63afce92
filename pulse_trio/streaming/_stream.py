"""``Stream``: append events to a Redis stream, remove them, inspect it, destroy it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, cast

import attrs
import coredis
from coredis.exceptions import ResponseError, WrongTypeError
from coredis.tokens import PureToken

from .._boundary import TRANSIENT_ERRORS
from .._errors import RedisUnavailableError
from .._lua import bind_script
from .._names import ttl_script_args, validate_duration, validate_name
from ._event import (
    NEWEST,
    StartPosition,
    encode_fields,
    start_to_id,
    stream_key,
    validate_event_id,
    wrong_type_error,
)

#: Default approximate maximum length of a stream (``XADD MAXLEN ~``).
DEFAULT_MAX_LEN = 1000
#: Default seconds a reader's or sink's ``XREAD``/``XREADGROUP`` blocks waiting for events.
DEFAULT_BLOCK = 5.0
#: Default ``COUNT`` of each read.
DEFAULT_MAX_POLLED = 1000
#: Default capacity of a reader's or sink's event buffer.
DEFAULT_BUFFER_SIZE = 1000

if TYPE_CHECKING:
    from ._reader import Reader
    from ._sink import Sink

_LOGGER = logging.getLogger("pulse_trio.streaming")

Client = coredis.Redis[Any] | coredis.RedisCluster[Any]
#: One item of :meth:`Stream.add_many`: ``(event_name, payload)`` or
#: ``(event_name, payload, topic)``.
EventSpec = tuple[str, bytes] | tuple[str, bytes, str | None]


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _validate_event(event_name: object, payload: object, topic: object) -> None:
    if not isinstance(event_name, str):
        raise TypeError(f"event name must be a str, not {type(event_name).__name__}")
    if not isinstance(payload, bytes):
        raise TypeError(
            f"payload must be bytes, not {type(payload).__name__} "
            "(encode it first, e.g. with .encode() or json.dumps(...).encode())"
        )
    if topic is not None and not isinstance(topic, str):
        raise TypeError(f"topic must be a str or None, not {type(topic).__name__}")


@attrs.frozen
class SinkInfo:
    """What :meth:`Stream.info` reports about one sink (a consumer group of the stream).

    Attributes:
        name: The sink's name (the consumer group's name).
        consumers: How many consumers (sink instances) the group has.
        pending: Entries delivered to the group and not acknowledged yet.
        last_delivered_id: The id of the last entry delivered to the group.
        lag: Entries in the stream not delivered to the group yet; ``None`` when Redis cannot
            tell (after entries were deleted in the middle of the stream).
    """

    name: str
    consumers: int
    pending: int
    last_delivered_id: str
    lag: int | None


@attrs.frozen
class StreamInfo:
    """A snapshot of a stream, returned by :meth:`Stream.info`.

    Attributes:
        name: The stream's name.
        length: Entries in the stream (0 when it does not exist).
        first_id: Id of the oldest entry, ``None`` when the stream is empty.
        last_id: Id of the newest entry, ``None`` when the stream is empty.
        last_generated_id: The last id Redis generated for the stream (``"0-0"`` when it does
            not exist); differs from ``last_id`` after the newest entries were removed.
        sinks: One :class:`SinkInfo` per sink (consumer group), sorted by name.
    """

    name: str
    length: int
    first_id: str | None
    last_id: str | None
    last_generated_id: str
    sinks: tuple[SinkInfo, ...]

    @property
    def exists(self) -> bool:
        """Whether the stream's key existed."""
        return self.last_generated_id != "0-0" or self.length > 0


class Stream:
    """A named event stream stored in the Redis stream ``pulse:stream:<name>``.

    Creating a ``Stream`` does no I/O; the key is created by the first :meth:`add`. Entries use
    goa.design/pulse's wire format (fields ``n``, ``p`` and optionally ``t``), so Go and Python
    processes can share a stream.

    Args:
        client: An entered coredis client (``decode_responses=False``); never closed here.
        name: The stream's name: 1 to 512 characters, none of space, NUL, ``*``, ``?``,
            ``[``, ``]``.
        max_len: Approximate maximum number of entries kept (``XADD MAXLEN ~``); older entries
            are trimmed, read or not. ``0`` turns trimming off. Default
            :data:`DEFAULT_MAX_LEN`.
        ttl: Absolute time to live of the stream key in seconds, set by the first add that
            finds no TTL on the key (``PEXPIRE NX``; needs Redis 7). ``None``: no TTL.
        sliding_ttl: Sliding time to live in seconds, refreshed by every add. Give ``ttl`` or
            ``sliding_ttl``, not both.
        logger: Logger for this stream and its readers; ``pulse_trio.streaming`` by default.

    Raises:
        pulse_trio.InvalidNameError: ``name`` breaks the naming rule.
        ValueError: ``max_len`` is negative or not an int, a TTL is not a positive number of
            seconds, or both TTLs are given.
    """

    def __init__(
        self,
        client: Client,
        name: str,
        *,
        max_len: int = DEFAULT_MAX_LEN,
        ttl: float | None = None,
        sliding_ttl: float | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self._name = validate_name("stream", name)
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 0:
            raise ValueError(f"max_len must be an int >= 0 (0 = no trimming), got {max_len!r}")
        ttl = validate_duration("ttl", ttl, allow_zero=False)
        sliding_ttl = validate_duration("sliding_ttl", sliding_ttl, allow_zero=False)
        if ttl is not None and sliding_ttl is not None:
            raise ValueError(
                f"give ttl or sliding_ttl, not both (got ttl={ttl!r}, sliding_ttl={sliding_ttl!r})"
            )
        self._client = client
        self._key = stream_key(name)
        self._max_len = max_len
        self._ttl = ttl
        self._sliding_ttl = sliding_ttl
        self._logger = logger if logger is not None else _LOGGER
        self._add_script = bind_script(client, "stream_add")
        self._trim: dict[str, Any] = (
            {
                "trim_strategy": PureToken.MAXLEN,
                "trim_operator": PureToken.APPROXIMATELY,
                "threshold": max_len,
            }
            if max_len
            else {}
        )
        self._ttl_args = ttl_script_args(ttl, sliding_ttl)

    @property
    def name(self) -> str:
        """The stream's name."""
        return self._name

    @property
    def key(self) -> str:
        """The Redis key holding the stream, ``pulse:stream:<name>``."""
        return self._key

    @property
    def client(self) -> Client:
        """The coredis client the stream uses."""
        return self._client

    @property
    def max_len(self) -> int:
        """Approximate maximum length (0: no trimming)."""
        return self._max_len

    @property
    def ttl(self) -> float | None:
        """Absolute TTL of the key in seconds, if any."""
        return self._ttl

    @property
    def sliding_ttl(self) -> float | None:
        """Sliding TTL of the key in seconds, if any."""
        return self._sliding_ttl

    @property
    def logger(self) -> logging.Logger:
        """The logger used by the stream and its readers."""
        return self._logger

    def __repr__(self) -> str:
        return f"<Stream {self._name!r} key={self._key!r} max_len={self._max_len}>"

    @contextlib.contextmanager
    def _errors(self, op: str) -> Iterator[None]:
        """Translate coredis errors of ``op`` into pulse errors (at this boundary only)."""
        try:
            yield
        except WrongTypeError as exc:
            raise wrong_type_error(self._name) from exc
        except TRANSIENT_ERRORS as exc:
            raise RedisUnavailableError(
                f"stream {self._name!r}: {op} failed, Redis is unreachable ({exc}); retry later"
            ) from exc

    async def _xinfo(self, op: str) -> Mapping[str, Any] | None:
        """``XINFO STREAM``, or ``None`` when the stream does not exist."""
        with self._errors(op):
            try:
                raw = await self._client.xinfo_stream(self._key)
            except WrongTypeError:
                raise
            except ResponseError as exc:
                if "no such key" not in str(exc).lower():
                    raise
                return None
        return cast(Mapping[str, Any], raw)

    async def _run_add_script(
        self, entries: Sequence[tuple[str, bytes, str | None]], *, nomkstream: bool
    ) -> list[str | None]:
        args: list[str | bytes] = [str(self._max_len), "1" if nomkstream else "0", *self._ttl_args]
        for event_name, payload, topic in entries:
            args += [event_name, payload, topic or ""]
        with self._errors("add"):
            reply: Any = await self._add_script(keys=[self._key], args=args)
        return [None if item is None else _text(item) for item in cast(list[Any], reply)]

    async def add(
        self,
        event_name: str,
        payload: bytes,
        *,
        topic: str | None = None,
        only_if_exists: bool = False,
    ) -> str | None:
        """Append one event to the stream.

        Args:
            event_name: The event's name (field ``n``); any string, also empty.
            payload: The event's payload (field ``p``).
            topic: Optional topic (field ``t``, written only when non-empty) that readers and
                sinks can filter on.
            only_if_exists: Do not create the stream when it does not exist (``NOMKSTREAM``);
                the event is then dropped and ``None`` returned.

        Returns:
            The new event's id, or ``None`` when ``only_if_exists`` found no stream.

        Raises:
            TypeError: ``payload`` is not ``bytes``, or the name or topic is not a ``str``.
            StreamError: The key holds a value that is not a stream.
            pulse_trio.RedisUnavailableError: Redis could not be reached.
        """
        _validate_event(event_name, payload, topic)
        if self._ttl_args[0]:
            # With a TTL the entry and the PEXPIRE go in one Lua script: one round trip, and
            # atomic, so a dropped connection can never leave the key without its TTL (a
            # pipeline could be cut between the two commands).
            entry = (event_name, payload, topic)
            event_id = (await self._run_add_script([entry], nomkstream=only_if_exists))[0]
        else:
            with self._errors("add"):
                reply = await self._client.xadd(
                    self._key,
                    encode_fields(event_name, payload, topic),
                    nomkstream=only_if_exists or None,
                    **self._trim,
                )
            event_id = None if reply is None else _text(reply)
        if self._logger.isEnabledFor(logging.DEBUG):  # the hot path: skip building extras
            self._logger.debug(
                "added event %r to stream %r: %s",
                event_name,
                self._name,
                event_id,
                extra={"stream": self._name, "event_name": event_name, "event_id": event_id},
            )
        return event_id

    async def add_many(self, events: Iterable[EventSpec]) -> list[str]:
        """Append several events in one round trip.

        The entries are appended by one Lua script (one round trip, no other client's entry
        in between, the TTL applied in the same step), in the order given.

        Args:
            events: ``(event_name, payload)`` or ``(event_name, payload, topic)`` tuples.

        Returns:
            The new ids, in the order of ``events`` (empty, without any I/O, when ``events``
            is empty).

        Raises:
            TypeError: An item is not a 2- or 3-tuple of the right types.
            StreamError: The key holds a value that is not a stream.
            pulse_trio.RedisUnavailableError: Redis could not be reached.
        """
        entries: list[tuple[str, bytes, str | None]] = []
        for item in events:
            if not isinstance(item, tuple) or len(item) not in (2, 3):
                raise TypeError(
                    f"each event must be a tuple (event_name, payload[, topic]), got {item!r}"
                )
            topic = item[2] if len(item) == 3 else None
            _validate_event(item[0], item[1], topic)
            entries.append((item[0], item[1], topic))
        if not entries:
            return []
        ids = await self._run_add_script(entries, nomkstream=False)
        self._logger.debug(
            "added %d events to stream %r",
            len(ids),
            self._name,
            extra={"stream": self._name, "count": len(ids)},
        )
        return [event_id for event_id in ids if event_id is not None]

    async def remove(self, *ids: str) -> int:
        """Delete entries by id (``XDEL``); not needed in normal operation.

        Args:
            *ids: Event ids.

        Returns:
            How many entries were deleted (ids not found are ignored).

        Raises:
            ValueError: An id is malformed.
            StreamError: The key holds a value that is not a stream.
            pulse_trio.RedisUnavailableError: Redis could not be reached.
        """
        normalised = [validate_event_id(event_id) for event_id in ids]
        if not normalised:
            return 0
        with self._errors("remove"):
            return await self._client.xdel(self._key, normalised)

    async def destroy(self) -> None:
        """Delete the stream, its entries and its consumer groups.

        The key is deleted whatever it holds. If sinks registered in the stream's membership
        map (``map:stream:<name>:sinks:content``), the map is tombstoned with the replicated
        map destroy protocol, so that running sinks (Go or Python) learn about it. Sinks'
        keep-alive maps are left alone, as goa.design/pulse does.

        Raises:
            pulse_trio.RedisUnavailableError: Redis could not be reached.
        """
        membership = f"stream:{self._name}:sinks"
        with self._errors("destroy"):
            await self._client.delete([self._key])
            has_sinks = await self._client.exists([f"map:{membership}:content"])
        if has_sinks:
            # Through the replicated map's own destroy (one script: bump the revision, write
            # the tombstone, publish), so live Go and Python sinks see the reset.
            from .. import rmap

            async with rmap.join(
                self._client,
                membership,
                ttl=self._ttl,
                sliding_ttl=self._sliding_ttl,
                logger=self._logger,
            ) as members:
                await members.destroy()
        self._logger.info("stream %r destroyed", self._name, extra={"stream": self._name})

    async def info(self) -> StreamInfo:
        """Return the stream's length, first and last ids, and each sink's progress.

        Returns:
            A :class:`StreamInfo`; length 0 and no sinks when the stream does not exist.

        Raises:
            StreamError: The key holds a value that is not a stream.
            pulse_trio.RedisUnavailableError: Redis could not be reached.
        """
        stream_info = await self._xinfo("info")
        if stream_info is None:
            return StreamInfo(self._name, 0, None, None, "0-0", ())
        first = stream_info.get("first-entry")
        last = stream_info.get("last-entry")
        sinks: list[SinkInfo] = []
        if stream_info.get("groups"):
            with self._errors("info"):
                try:
                    groups = await self._client.xinfo_groups(self._key)
                except ResponseError as exc:  # deleted in between
                    if "no such key" not in str(exc).lower():
                        raise
                    groups = ()
            for group in groups:
                fields = {_text(k): v for k, v in group.items()}
                lag = fields.get("lag")
                sinks.append(
                    SinkInfo(
                        name=_text(fields["name"]),
                        consumers=int(cast(int, fields.get("consumers") or 0)),
                        pending=int(cast(int, fields.get("pending") or 0)),
                        last_delivered_id=_text(fields.get("last-delivered-id") or "0-0"),
                        lag=None if lag is None else int(cast(int, lag)),
                    )
                )
        return StreamInfo(
            name=self._name,
            length=int(stream_info.get("length") or 0),
            first_id=_text(first.identifier) if first is not None else None,
            last_id=_text(last.identifier) if last is not None else None,
            last_generated_id=_text(stream_info.get("last-generated-id") or "0-0"),
            sinks=tuple(sorted(sinks, key=lambda s: s.name)),
        )

    async def _last_generated_id(self) -> str:
        """The id a reader starting at NEWEST reads after ("0-0" when there is no stream).

        Raises:
            StreamError: The key holds a value that is not a stream.
            pulse_trio.RedisUnavailableError: Redis could not be reached.
        """
        stream_info = await self._xinfo("reading")
        if stream_info is None:
            return "0-0"
        return _text(stream_info.get("last-generated-id") or "0-0")

    async def _resolve_start(self, start: StartPosition) -> str:
        """Return the concrete id to read strictly after, for a start position.

        The stream is looked at whatever the start, so that a wrong-type key or an
        unreachable server is reported here, by the caller's ``async with`` or ``add_stream``.
        """
        last_id = await self._last_generated_id()
        return last_id if start is NEWEST else start_to_id(start)

    def open_reader(
        self,
        *,
        start: StartPosition = NEWEST,
        block: float = DEFAULT_BLOCK,
        max_polled: int = DEFAULT_MAX_POLLED,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        topic: str | None = None,
        topic_pattern: str | None = None,
    ) -> Reader:
        """Return a reader of this stream, to be entered with ``async with``.

        Every reader has its own cursor and sees every event after its start (fan-out). See
        :class:`Reader` for the options and guarantees.

        Raises:
            ValueError: An option is invalid (checked here, before any I/O).
        """
        from ._reader import Reader

        return Reader(
            self,
            start=start,
            block=block,
            max_polled=max_polled,
            buffer_size=buffer_size,
            topic=topic,
            topic_pattern=topic_pattern,
        )

    def open_sink(
        self,
        name: str,
        *,
        start: StartPosition = NEWEST,
        block: float = DEFAULT_BLOCK,
        max_polled: int = DEFAULT_MAX_POLLED,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        ack_grace_period: float = 20.0,
        no_ack: bool = False,
        topic: str | None = None,
        topic_pattern: str | None = None,
        max_deliveries: int | None = None,
        dead_letter: Stream | str | None = None,
    ) -> AbstractAsyncContextManager[Sink]:
        """Return a sink (a consumer group) of this stream, to be entered with ``async with``.

        Each event is delivered to one instance of the sink, at least once. See
        :class:`Sink` for the options and guarantees.
        """
        from ._sink import open_sink  # imported lazily: the sink module builds on this one

        return open_sink(
            self,
            name,
            start=start,
            block=block,
            max_polled=max_polled,
            buffer_size=buffer_size,
            ack_grace_period=ack_grace_period,
            no_ack=no_ack,
            topic=topic,
            topic_pattern=topic_pattern,
            max_deliveries=max_deliveries,
            dead_letter=dead_letter,
        )
