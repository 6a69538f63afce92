"""Events, start positions, topic filters and the stream entry wire format.

Wire format (goa.design/pulse): stream key ``pulse:stream:<name>``; entry fields ``n`` (event
name), ``p`` (payload bytes) and ``t`` (topic, only when non-empty), in that order.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import attrs

from .._boundary import strict_text, text
from .._errors import InvalidNameError, PulseError
from .._names import validate_name

#: Prefix of every stream key.
STREAM_KEY_PREFIX = "pulse:stream:"
_ID_RE = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")
_MAX_SEQ = 2**64 - 1


def stream_key(name: str) -> str:
    """Return the Redis key of the stream called ``name``."""
    return STREAM_KEY_PREFIX + name


class Start(enum.Enum):
    """Symbolic start positions for readers and sinks."""

    #: Only events added after the reader opened (or the sink's group was created).
    NEWEST = "$"
    #: Every event still in the stream.
    OLDEST = "0"


NEWEST = Start.NEWEST
OLDEST = Start.OLDEST

#: What ``start=`` accepts: a symbolic position, an event id (read strictly after it), or a
#: datetime (read every event created at or after it).
StartPosition = Start | str | datetime


def validate_event_id(value: str) -> str:
    """Return ``value`` normalised to ``<ms>-<seq>`` if it is a Redis stream id.

    Raises:
        ValueError: It is not of the form ``<ms>`` or ``<ms>-<seq>``.
    """
    match = _ID_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"invalid event id {value!r}: expected '<milliseconds>-<sequence>'")
    ms, seq = int(match.group(1)), int(match.group(2) or 0)
    if ms > _MAX_SEQ or seq > _MAX_SEQ:
        raise ValueError(f"invalid event id {value!r}: a part exceeds 2**64-1")
    return f"{ms}-{seq}"


def start_to_id(start: StartPosition) -> str:
    """Translate a start position into the id to read strictly after.

    ``NEWEST`` becomes ``$`` (callers that need a concrete id resolve it), ``OLDEST`` ``0-0``,
    an id itself, and a datetime the last possible id of the millisecond before it, so that
    an event created exactly at that millisecond is included.

    Raises:
        ValueError: A malformed id, or a naive datetime.
    """
    if isinstance(start, Start):
        return "$" if start is Start.NEWEST else "0-0"
    if isinstance(start, datetime):
        if start.tzinfo is None:
            raise ValueError(f"start datetime {start!r} must be timezone-aware")
        ms = int(start.timestamp() * 1000)
        if ms <= 0:
            return "0-0"
        return f"{ms - 1}-{_MAX_SEQ}"
    if isinstance(start, str):
        return validate_event_id(start)
    raise ValueError(
        f"invalid start {start!r}: use streaming.NEWEST, streaming.OLDEST, an id or a datetime"
    )


def id_to_datetime(event_id: str) -> datetime:
    """Return the creation time (UTC, millisecond precision) encoded in a stream id."""
    ms = int(event_id.split("-", 1)[0])
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def id_key(event_id: str) -> tuple[int, int]:
    """Return a sortable ``(ms, seq)`` tuple for a stream id."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


@attrs.frozen
class Event:
    """One event read from a stream.

    Attributes:
        id: The Redis stream entry id, ``<ms>-<seq>``.
        stream_name: The stream's name (without the key prefix).
        sink_name: The sink that delivered it; ``None`` for readers.
        event_name: The ``n`` field.
        topic: The ``t`` field, ``None`` when absent.
        payload: The ``p`` field.
        deliveries: For sinks, how many times the entry was delivered (1 the first time; from
            the group's pending entries list when reclaimed). Readers always report 1.
    """

    id: str
    stream_name: str
    sink_name: str | None
    event_name: str
    topic: str | None
    payload: bytes
    deliveries: int = 1

    @property
    def created_at(self) -> datetime:
        """When the event was added (UTC), from the millisecond part of its id."""
        return id_to_datetime(self.id)


class MalformedEntryError(PulseError, ValueError):
    """A stream entry lacks the fields pulse writes (``n`` and ``p``), or they do not decode."""


class InvalidEventError(PulseError, ValueError):
    """An event given to a sink's ``ack`` or ``ack_nowait`` cannot be acknowledged by it: its
    id is not a stream id or its stream name is not a valid name (an event built by hand),
    or another sink or a reader delivered it. Nothing was sent.

    Attributes:
        event: The rejected event.
    """

    def __init__(self, event: object, reason: str) -> None:
        self.event = event
        super().__init__(reason)


def check_ack(event: Event, sink_name: str) -> None:
    """Raise unless sink ``sink_name`` can acknowledge ``event`` (no I/O).

    Raises:
        InvalidEventError: Its id is not ``<ms>-<seq>``, its stream name breaks the naming
            rule (strict UTF-8 text included), or it was not delivered by ``sink_name``.
    """
    if event.sink_name != sink_name:
        raise InvalidEventError(
            event,
            f"event {event.id} of stream {event.stream_name!r} was delivered by "
            f"{'a reader' if event.sink_name is None else repr(event.sink_name)}, "
            f"not by sink {sink_name!r}",
        )
    try:
        validate_event_id(event.id)
    except ValueError as exc:
        raise InvalidEventError(event, f"cannot acknowledge: {exc}") from None
    try:
        validate_name("stream", event.stream_name)
    except InvalidNameError as exc:
        raise InvalidEventError(event, f"cannot acknowledge event {event.id}: {exc}") from None


class StreamError(PulseError):
    """A stream cannot be used as one: its key holds another type of value, for example.

    Attributes:
        stream: The stream's name.
        key: The Redis key involved.
    """

    def __init__(self, message: str, *, stream: str, key: str) -> None:
        self.stream = stream
        self.key = key
        super().__init__(message)


def wrong_type_error(stream: str) -> StreamError:
    """The error for a stream whose key holds a value that is not a Redis stream."""
    key = stream_key(stream)
    return StreamError(
        f"key {key!r} of stream {stream!r} holds a value that is not a Redis stream: "
        "delete it or use another stream name",
        stream=stream,
        key=key,
    )


def encode_fields(event_name: str, payload: bytes, topic: str | None) -> dict[str, bytes | str]:
    """Return the entry fields for XADD, in pulse's order: ``n``, ``p`` and (if any) ``t``."""
    fields: dict[str, bytes | str] = {"n": event_name, "p": payload}
    if topic:
        fields["t"] = topic
    return fields


def decode_entry(
    entry_id: bytes | str,
    fields: Mapping[bytes, bytes] | Mapping[str, bytes] | Mapping[bytes | str, bytes | str],
    *,
    stream_name: str,
    sink_name: str | None = None,
    deliveries: int = 1,
) -> Event:
    """Build an :class:`Event` from a raw entry.

    Raises:
        MalformedEntryError: ``n`` or ``p`` is missing, or ``n``/``t`` is not UTF-8.
    """
    by_name = {text(k): v for k, v in fields.items()}
    eid = text(entry_id)
    if "n" not in by_name or "p" not in by_name:
        raise MalformedEntryError(
            f"entry {eid} of stream {stream_name!r} lacks field 'n' or 'p' "
            f"(fields: {sorted(by_name)})"
        )
    try:
        name = strict_text(by_name["n"])
        topic_raw = by_name.get("t")
        topic = strict_text(topic_raw) if topic_raw is not None else None
    except UnicodeDecodeError as exc:
        raise MalformedEntryError(f"entry {eid} of stream {stream_name!r}: {exc}") from exc
    payload = by_name["p"]
    return Event(
        id=eid,
        stream_name=stream_name,
        sink_name=sink_name,
        event_name=name,
        topic=topic or None,
        payload=payload if isinstance(payload, bytes) else payload.encode("utf-8"),
        deliveries=deliveries,
    )


@attrs.frozen
class TopicFilter:
    """Client-side topic filter: exact ``topic`` wins over ``topic_pattern``.

    The pattern is a Python regular expression searched anywhere in the topic (unanchored,
    as Go pulse does); events without a topic have topic ``""`` for matching.
    """

    topic: str | None = None
    pattern: re.Pattern[str] | None = None

    @classmethod
    def build(cls, topic: str | None, topic_pattern: str | None) -> TopicFilter:
        """Validate and compile a filter.

        Raises:
            ValueError: ``topic_pattern`` is not a valid regular expression.
        """
        if topic is not None and not isinstance(topic, str):
            raise ValueError(f"topic must be a str, not {type(topic).__name__}")
        compiled = None
        if topic_pattern is not None and not topic:
            try:
                compiled = re.compile(topic_pattern)
            except (re.error, TypeError) as exc:
                raise ValueError(
                    f"topic pattern must be a valid regex: {topic_pattern!r}: {exc}"
                ) from exc
        return cls(topic=topic or None, pattern=compiled)

    def matches(self, event_topic: str | None) -> bool:
        """Whether an event with ``event_topic`` passes the filter."""
        if self.topic is not None:
            return (event_topic or "") == self.topic
        if self.pattern is not None:
            return self.pattern.search(event_topic or "") is not None
        return True
