"""Options of streams, readers and sinks: defaults, validation, key names (no I/O).

The bottom of the streaming package next to ``_event.py``: readers and sinks are built from
the values checked here, and :class:`~pulse_trio.streaming.Stream` (on top) passes its
options down through them. Every default is defined here, once.
"""

from __future__ import annotations

import binascii
import logging
from typing import Final, Protocol, runtime_checkable

import attrs

from .._boundary import Client
from .._errors import InvalidNameError
from .._names import text_problem, validate_duration, validate_name
from ._event import NEWEST, StartPosition, TopicFilter, start_to_id, stream_key
from ._sink_policy import SinkTiming

#: Default approximate maximum length of a stream (``XADD MAXLEN ~``).
DEFAULT_MAX_LEN: Final = 1000
#: Default seconds a reader's or sink's ``XREAD``/``XREADGROUP`` blocks waiting for events.
DEFAULT_BLOCK: Final = 5.0
#: Default ``COUNT`` of each read.
DEFAULT_MAX_POLLED: Final = 1000
#: Default capacity of a reader's or sink's event buffer.
DEFAULT_BUFFER_SIZE: Final = 1000
#: Default ack grace period of a sink, in seconds.
DEFAULT_ACK_GRACE_PERIOD: Final = 20.0


# ---------------------------------------------------------------------- key names


def membership_map_name(stream: str) -> str:
    """The replicated map listing, per sink, the consumers reading a stream (Go's name)."""
    return f"stream:{stream}:sinks"


def keepalive_map_name(sink: str) -> str:
    """The replicated map holding the keep-alives of a sink's instances (Go's name)."""
    return f"sink:{sink}:keepalive"


def lease_key(sink: str, stream: str) -> str:
    """The key of the reclaim lease of one sink on one stream (pulse-trio's own)."""
    return f"pulse:sink:{sink}:lease:{stream}"


def key_slot(key: str) -> int:
    """Return the Redis Cluster hash slot of ``key`` (honouring ``{hash tags}``)."""
    raw = key.encode("utf-8")
    start = raw.find(b"{")
    if start != -1:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return binascii.crc_hqx(raw, 0) % 16384


# ---------------------------------------------------------------------- streams


@runtime_checkable
class StreamLike(Protocol):
    """What readers and sinks need of a :class:`~pulse_trio.streaming.Stream`."""

    @property
    def client(self) -> Client:
        """The client the stream uses."""

    @property
    def name(self) -> str:
        """The stream's name."""

    @property
    def ttl(self) -> float | None:
        """Absolute TTL of the key in seconds."""

    @property
    def sliding_ttl(self) -> float | None:
        """Sliding TTL of the key in seconds."""

    @property
    def logger(self) -> logging.Logger:
        """The stream's logger."""


@attrs.frozen
class StreamRef:
    """The values of a stream that readers and sinks keep (immutable)."""

    client: Client
    name: str
    key: str
    ttl: float | None
    sliding_ttl: float | None
    logger: logging.Logger

    @classmethod
    def of(cls, stream: object) -> StreamRef:
        """Take the values of a :class:`~pulse_trio.streaming.Stream`.

        Raises:
            TypeError: ``stream`` is not a stream.
        """
        if not isinstance(stream, StreamLike):
            raise TypeError(f"expected a streaming.Stream, not {type(stream).__name__}")
        return cls(
            stream.client,
            stream.name,
            stream_key(stream.name),
            stream.ttl,
            stream.sliding_ttl,
            stream.logger,
        )


# ---------------------------------------------------------------------- validation


def positive_int(what: str, value: object) -> int:
    """Return ``value`` if it is an ``int >= 1``, else raise :class:`ValueError` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an int >= 1, got {value!r}")
    return value


def validate_start(start: object) -> StartPosition:
    """Check a start position before any I/O (``NEWEST`` is resolved later).

    Raises:
        ValueError: ``start`` is not ``NEWEST``, ``OLDEST``, an event id or an aware datetime.
    """
    if start is NEWEST:
        return NEWEST
    try:
        start_to_id(start)  # type: ignore[arg-type]  # raises ValueError for anything else
    except ValueError as exc:
        raise ValueError(f"start: {exc}") from None
    return start  # type: ignore[return-value]


def validate_block(block: object) -> float:
    """Check ``block`` (seconds, ``0`` = without limit).

    Raises:
        ValueError: Not a finite number of seconds >= 0 (``None`` included).
    """
    if block is None:
        raise ValueError("block must be a number of seconds >= 0 (0 = wait without limit)")
    checked = validate_duration("block", block)  # type: ignore[arg-type]
    assert checked is not None
    return checked


#: The longest ``BLOCK`` sent, in milliseconds: a read meant to block forever is re-issued
#: every minute, so that a frozen server is noticed (the transport bounds each blocking read
#: by its ``BLOCK`` plus ``command_timeout``).
MAX_BLOCK_MS = 60_000


def block_ms(block: float) -> int:
    """``BLOCK`` in milliseconds for a wait of ``block`` seconds (``0``: as long as it takes).

    The transport gives every blocking read ``command_timeout`` more than its ``BLOCK`` to
    answer, so any block works; an endless one (``BLOCK 0``) is capped at
    :data:`MAX_BLOCK_MS` instead, because a frozen server would never be noticed. Re-issuing
    a shorter blocking read changes nothing for readers (their cursor is concrete) or sinks
    (``>`` is the group's cursor).
    """
    milliseconds = round(block * 1000)
    if block > 0:
        milliseconds = max(1, milliseconds)
    if milliseconds == 0 or milliseconds > MAX_BLOCK_MS:
        milliseconds = MAX_BLOCK_MS
    return milliseconds


@attrs.frozen
class ReadOptions:
    """Options shared by readers and sinks, checked (see :meth:`build`)."""

    start: StartPosition
    block: float
    block_ms: int
    max_polled: int
    buffer_size: int
    filter: TopicFilter

    @classmethod
    def build(
        cls,
        *,
        start: object,
        block: object,
        max_polled: object,
        buffer_size: object,
        topic: object,
        topic_pattern: object,
    ) -> ReadOptions:
        """Check every option before any I/O.

        Raises:
            ValueError: An option is invalid; the message names it (a ``topic`` that is not
                strict UTF-8 text, which no event can carry: an ``InvalidNameError``).
            TypeError: ``topic``/``topic_pattern`` are not strings.
        """
        checked_block = validate_block(block)
        if topic is not None and not isinstance(topic, str):
            raise TypeError(f"topic must be a str or None, not {type(topic).__name__}")
        if topic is not None and (problem := text_problem(topic, lossless=False)) is not None:
            raise InvalidNameError("topic", topic, problem)
        if topic_pattern is not None and not isinstance(topic_pattern, str):
            raise TypeError(
                f"topic_pattern must be a str or None, not {type(topic_pattern).__name__}"
            )
        return cls(
            start=validate_start(start),
            block=checked_block,
            block_ms=block_ms(checked_block),
            max_polled=positive_int("max_polled", max_polled),
            buffer_size=positive_int("buffer_size", buffer_size),
            filter=TopicFilter.build(topic, topic_pattern),
        )


@attrs.frozen
class SinkOptions:
    """A sink's options, checked (see :meth:`build`)."""

    read: ReadOptions
    start_id: str
    timing: SinkTiming
    no_ack: bool
    max_deliveries: int | None
    dead_letter: str | None

    @classmethod
    def build(
        cls,
        stream: StreamRef,
        *,
        start: object,
        block: object,
        max_polled: object,
        buffer_size: object,
        ack_grace_period: object,
        no_ack: object,
        topic: object,
        topic_pattern: object,
        max_deliveries: object,
        dead_letter: object,
    ) -> SinkOptions:
        """Check every option before any I/O.

        Raises:
            pulse_trio.InvalidNameError: Bad dead-letter stream name.
            ValueError: An option is invalid; the message names it.
            TypeError: An option has the wrong type.
        """
        read = ReadOptions.build(
            start=start,
            block=block,
            max_polled=max_polled,
            buffer_size=buffer_size,
            topic=topic,
            topic_pattern=topic_pattern,
        )
        if ack_grace_period is None:
            raise ValueError("ack_grace_period must be a number of seconds > 0, not None")
        grace = validate_duration("ack_grace_period", ack_grace_period, allow_zero=False)  # type: ignore[arg-type]
        assert grace is not None
        if not isinstance(no_ack, bool):
            raise TypeError(f"no_ack must be a bool, not {type(no_ack).__name__}")
        deliveries: int | None = None
        if max_deliveries is not None:
            deliveries = positive_int("max_deliveries", max_deliveries)
            if no_ack:
                raise ValueError(
                    f"max_deliveries={max_deliveries!r} needs acknowledgements: with "
                    "no_ack=True events are never redelivered"
                )
        dead_letter_name: str | None = None
        if dead_letter is not None:
            candidate = dead_letter if isinstance(dead_letter, str) else None
            if candidate is None:
                candidate = StreamRef.of(dead_letter).name
            dead_letter_name = validate_name("dead-letter stream", candidate)
            if deliveries is None:
                raise ValueError(
                    f"dead_letter={dead_letter_name!r} needs max_deliveries: say after how "
                    "many deliveries an event is moved there"
                )
            if dead_letter_name == stream.name:
                raise ValueError(
                    f"dead_letter={dead_letter_name!r} must differ from the stream the sink reads"
                )
        return cls(
            read=read,
            start_id=start_to_id(read.start),
            timing=SinkTiming.from_grace(grace),
            no_ack=no_ack,
            max_deliveries=deliveries,
            dead_letter=dead_letter_name,
        )
