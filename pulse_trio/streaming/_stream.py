"""``Stream``: append events to a Redis stream, remove them, inspect it, destroy it."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, cast

import attrs

from .. import _metrics
from .._boundary import Client, check_client, is_no_such_key, text
from .._errors import InvalidNameError
from .._lua import bind_script
from .._names import (
    text_problem,
    ttl_script_args,
    validate_duration,
    validate_logger,
    validate_name,
)
from ..rmap._ops import MapOps
from ._event import NEWEST, StartPosition, encode_fields, stream_key, validate_event_id
from ._io import info_maps, resolve_start, stream_errors, xinfo_stream
from ._options import (
    DEFAULT_ACK_GRACE_PERIOD,
    DEFAULT_BLOCK,
    DEFAULT_BUFFER_SIZE,
    DEFAULT_MAX_LEN,
    DEFAULT_MAX_POLLED,
    ReadOptions,
    SinkOptions,
    StreamRef,
    membership_map_name,
)
from ._reader import Reader
from ._sink import Sink

_LOGGER = logging.getLogger("pulse_trio.streaming")

#: One item of :meth:`Stream.add_many`: ``(event_name, payload)`` or
#: ``(event_name, payload, topic)``.
EventSpec = tuple[str, bytes] | tuple[str, bytes, str | None]


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
    # Strict UTF-8: readers decode both strictly (an entry whose name is not UTF-8 is
    # malformed), so nothing else could be read back.
    problem = text_problem(event_name, lossless=False)
    if problem is not None:
        raise InvalidNameError("event", event_name, problem)
    if topic is not None and (problem := text_problem(topic, lossless=False)) is not None:
        raise InvalidNameError("topic", topic, problem)


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
        client: An open :class:`pulse_trio.Client` (from :func:`pulse_trio.connect`); never
            closed here.
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
        pulse_trio.InvalidNameError: ``name`` breaks the naming rule (1 to 512 characters,
            none of space, NUL, ``*``, ``?``, ``[``, ``]``) or is not strict UTF-8 text (it
            holds a surrogate code point).
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
        validate_logger(logger)
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 0:
            raise ValueError(f"max_len must be an int >= 0 (0 = no trimming), got {max_len!r}")
        ttl = validate_duration("ttl", ttl, allow_zero=False)
        sliding_ttl = validate_duration("sliding_ttl", sliding_ttl, allow_zero=False)
        if ttl is not None and sliding_ttl is not None:
            raise ValueError(
                f"give ttl or sliding_ttl, not both (got ttl={ttl!r}, sliding_ttl={sliding_ttl!r})"
            )
        check_client(client)
        self._client = client
        self._key = stream_key(name)
        self._max_len = max_len
        self._ttl = ttl
        self._sliding_ttl = sliding_ttl
        self._logger = logger if logger is not None else _LOGGER
        self._add_script = bind_script(client, "stream_add")
        self._trim: tuple[str | int, ...] = ("MAXLEN", "~", max_len) if max_len else ()
        self._ttl_args = ttl_script_args(ttl, sliding_ttl)
        self._cell = _metrics.stream_cell(self._name)

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
        """The client the stream uses."""
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

    async def _run_add_script(
        self, entries: Sequence[tuple[str, bytes, str | None]], *, nomkstream: bool
    ) -> list[str | None]:
        args: list[str | bytes] = [str(self._max_len), "1" if nomkstream else "0", *self._ttl_args]
        for event_name, payload, topic in entries:
            args += [event_name, payload, topic or ""]
        with stream_errors(self._name, "add"):
            reply: Any = await self._add_script(keys=[self._key], args=args)
        # NOMKSTREAM without a stream: Lua's false, a nil (or RESP3 false) in the reply.
        return [text(item) if item else None for item in cast(list[Any], reply)]

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
            pulse_trio.InvalidNameError: The event name or the topic is not strict UTF-8
                text (it holds a surrogate code point, e.g. ``"\\ud800"``; before any I/O).
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
            fields = encode_fields(event_name, payload, topic)
            with stream_errors(self._name, "add"):
                reply = await self._client.execute(
                    "XADD",
                    self._key,
                    *(("NOMKSTREAM",) if only_if_exists else ()),
                    *self._trim,
                    "*",
                    *(item for pair in fields.items() for item in pair),
                )
            event_id = None if reply is None else text(reply)
        if event_id is not None:
            self._cell.added += 1
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
            pulse_trio.InvalidNameError: An event name or topic is not strict UTF-8 text (as
                for :meth:`add`); nothing is written (every item is checked before any I/O).
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
        self._cell.added += len(ids)
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
        with stream_errors(self._name, "remove"):
            return int(await self._client.execute("XDEL", self._key, *normalised))

    async def destroy(self) -> None:
        """Delete the stream, its entries and its consumer groups.

        The key is deleted whatever it holds. If sinks registered in the stream's membership
        map (``map:stream:<name>:sinks:content``), the map is tombstoned with the replicated
        map destroy protocol, so that running sinks (Go or Python) learn about it. Sinks'
        keep-alive maps are left alone, as goa.design/pulse does.

        Raises:
            pulse_trio.RedisUnavailableError: Redis could not be reached.
        """
        members = MapOps.create(
            self._client,
            membership_map_name(self._name),
            ttl=self._ttl,
            sliding_ttl=self._sliding_ttl,
        )
        with stream_errors(self._name, "destroy"):
            await self._client.execute("DEL", self._key)
        if await members.exists():
            # The replicated map's own destroy (one script: bump the revision, write the
            # tombstone, publish), so that live Go and Python sinks see the reset.
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
        stream_info = await xinfo_stream(self._client, self._name, self._key, "info")
        if stream_info is None:
            return StreamInfo(self._name, 0, None, None, "0-0", ())
        first = stream_info.get("first-entry")
        last = stream_info.get("last-entry")
        sinks: list[SinkInfo] = []
        if stream_info.get("groups"):
            with stream_errors(self._name, "info"):
                try:
                    groups = info_maps(await self._client.execute("XINFO", "GROUPS", self._key))
                except Exception as exc:  # deleted in between
                    if not is_no_such_key(exc):
                        raise
                    groups = []
            for fields in groups:
                lag = fields.get("lag")
                sinks.append(
                    SinkInfo(
                        name=text(cast(bytes, fields["name"])),
                        consumers=int(cast(int, fields.get("consumers") or 0)),
                        pending=int(cast(int, fields.get("pending") or 0)),
                        last_delivered_id=text(
                            cast(bytes, fields.get("last-delivered-id") or "0-0")
                        ),
                        lag=None if lag is None else int(cast(int, lag)),
                    )
                )
        return StreamInfo(
            name=self._name,
            length=int(stream_info.get("length") or 0),
            first_id=text(first[0]) if first else None,
            last_id=text(last[0]) if last else None,
            last_generated_id=text(stream_info.get("last-generated-id") or "0-0"),
            sinks=tuple(sorted(sinks, key=lambda s: s.name)),
        )

    async def _resolve_start(self, start: StartPosition) -> str:
        """The concrete id a reader starting at ``start`` reads after (see ``_io``)."""
        return await resolve_start(self._client, self._name, self._key, start)

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
        """Return a reader of this stream, to be entered (once) with ``async with``.

        Every reader has its own cursor and sees every event after its start (fan-out). See
        :class:`Reader` for the guarantees.

        Args:
            start: ``streaming.NEWEST`` (default: events added after the block is entered),
                ``streaming.OLDEST`` (every event still in the stream), an event id (events
                after it) or a timezone-aware ``datetime`` (events created at or after it).
            block: Seconds each ``XREAD`` waits for new events before it is re-issued; ``0``
                waits without limit (re-issued every minute). Leaving the block never waits
                for it. Any value works whatever the client's ``command_timeout``: a
                blocking read is given its ``BLOCK`` plus ``command_timeout`` to answer.
            max_polled: Most events fetched per stream in one ``XREAD`` (``COUNT``).
            buffer_size: Capacity of the event buffer between the read loop and the consumer.
            topic: Deliver only events with exactly this topic.
            topic_pattern: Deliver only events whose topic matches this regular expression
                (searched anywhere in the topic; events without a topic have topic ``""``);
                ignored when ``topic`` is given.

        Returns:
            The :class:`Reader`, not started yet.

        Raises:
            ValueError: An option is invalid (here, before any I/O); the message names it.
            TypeError: ``topic`` or ``topic_pattern`` is not a string.
        """
        options = ReadOptions.build(
            start=start,
            block=block,
            max_polled=max_polled,
            buffer_size=buffer_size,
            topic=topic,
            topic_pattern=topic_pattern,
        )
        return Reader._create(self, options)

    def open_sink(
        self,
        name: str,
        *,
        start: StartPosition = NEWEST,
        block: float = DEFAULT_BLOCK,
        max_polled: int = DEFAULT_MAX_POLLED,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        ack_grace_period: float = DEFAULT_ACK_GRACE_PERIOD,
        no_ack: bool = False,
        topic: str | None = None,
        topic_pattern: str | None = None,
        max_deliveries: int | None = None,
        dead_letter: Stream | str | None = None,
    ) -> Sink:
        """Return an instance of the sink ``name`` on this stream, to enter with ``async with``.

        Every instance with the same name (Python or Go, any process) shares the stream's
        consumer group ``name``: each event is delivered to one instance, at least once, and
        must be acknowledged with :meth:`Sink.ack`. See :class:`Sink` for the guarantees,
        cancellation and connections.

        Args:
            name: The sink's name: 1 to 512 characters, none of space, NUL, ``*``, ``?``,
                ``[``, ``]``.
            start: Where the group starts when this instance creates it: ``NEWEST``
                (default: events added after creation), ``OLDEST``, an event id (strictly
                after it) or a timezone-aware datetime. An existing group keeps its position.
            block: Seconds each ``XREADGROUP`` waits for events (0: without limit, re-issued
                every minute). Leaving the block never waits for it. Any value works whatever
                the client's ``command_timeout`` (a blocking read is given its ``BLOCK`` plus
                ``command_timeout``).
            max_polled: Most entries read per ``XREADGROUP`` (its ``COUNT``).
            buffer_size: Events read ahead and held for the iteration; a full buffer pauses
                reading (and reclaiming) of this instance.
            ack_grace_period: Seconds an event may stay unacknowledged after it was read
                before any instance may claim it and deliver it again. Keep-alives are
                written every third of it; an instance silent for twice this long is
                considered gone. All instances of a sink should use the same value.
            no_ack: Read with ``NOACK``: events are never pending, never redelivered (at
                most once); :meth:`Sink.ack` does nothing.
            topic: Deliver only events with exactly this topic.
            topic_pattern: Deliver only events whose topic matches this regular expression
                (searched, not anchored; ignored when ``topic`` is given). Events filtered
                out are acknowledged.
            max_deliveries: Deliver an event at most this many times; the next time it would
                be delivered it is moved to ``dead_letter`` (or dropped when there is none)
                and acknowledged. ``None``: redeliver without limit.
            dead_letter: The stream (or its name) receiving events that reached
                ``max_deliveries``, with fields ``n``, ``p``, ``t`` as in the original plus
                ``original_id``, ``original_stream``, ``sink`` and ``deliveries``.

        Returns:
            The :class:`Sink` instance, not started yet.

        Raises:
            pulse_trio.InvalidNameError: Bad sink or dead-letter stream name (here, before
                any I/O): the naming rule of streams, strict UTF-8 text included.
            ValueError: Bad option (here, before any I/O), the message naming it: a
                negative or missing ``block``, a non-positive ``ack_grace_period``,
                ``max_polled``/``buffer_size``/``max_deliveries`` below 1, an invalid
                ``topic_pattern``, a ``dead_letter`` without ``max_deliveries``, or
                ``max_deliveries`` with ``no_ack``.
            TypeError: An option of the wrong type.
        """
        name = validate_name("sink", name)
        ref = StreamRef.of(self)
        options = SinkOptions.build(
            ref,
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
        return Sink._create(ref, name, options)
