"""The rmap wire format and revision bookkeeping: pure functions, no I/O.

Storage: hash ``map:<name>:content`` holding the user keys plus ``=rev`` (a counter bumped by
every committed write) and ``=kind`` (the kind of the last write). Channel
``map:<name>:updates`` carries one message per committed write:

====================  ==========================================================
``set:`` + payload    ``L(key) key L(value) value L(rev) rev``
``del:`` + payload    ``L(key) key L(rev) rev``
``reset:<rev>``       every user key removed; ``rev`` in decimal ASCII
``destroy:<rev>``     same as reset (the map was destroyed)
====================  ==========================================================

``L(x)`` is the length of ``x`` as a 4-byte little-endian unsigned integer. These are the
formats of goa.design/pulse, so Go and Python replicas share maps.
"""

from __future__ import annotations

import enum
import json
import struct

import attrs

from .._text import text

REV_FIELD = "=rev"
KIND_FIELD = "=kind"
RESERVED_FIELDS = frozenset({REV_FIELD, KIND_FIELD})
_LEN = struct.Struct("<I")


def content_key(name: str) -> str:
    """Return the Redis key of the hash that stores map ``name``."""
    return f"map:{name}:content"


def updates_channel(name: str) -> str:
    """Return the pub/sub channel on which map ``name`` publishes its writes."""
    return f"map:{name}:updates"


class EventKind(enum.IntEnum):
    """What a subscriber is told changed; a larger value is a stronger change.

    The numbers are goa.design/pulse's (``EventChange`` = 1, ``EventDelete`` = 2,
    ``EventReset`` = 3).
    """

    #: A key was set (or its value changed).
    CHANGE = 1
    #: A key was deleted.
    DELETE = 2
    #: The map was reset or destroyed (every key removed), or re-read after a fault.
    RESET = 3


class MessageKind(enum.Enum):
    """The operation a notification carries."""

    SET = "set"
    DEL = "del"
    RESET = "reset"
    DESTROY = "destroy"


@attrs.frozen
class Message:
    """One decoded notification."""

    kind: MessageKind
    revision: int
    key: str | None = None
    value: str | None = None

    @property
    def event_kind(self) -> EventKind:
        """The subscriber event this message causes when applied."""
        if self.kind is MessageKind.SET:
            return EventKind.CHANGE
        if self.kind is MessageKind.DEL:
            return EventKind.DELETE
        return EventKind.RESET


class DecodeError(ValueError):
    """A notification that does not follow the wire format."""


def _take(data: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(data):
        raise DecodeError(f"truncated length prefix at byte {offset}")
    (length,) = _LEN.unpack_from(data, offset)
    start, end = offset + 4, offset + 4 + length
    if end > len(data):
        raise DecodeError(f"field of {length} bytes at byte {offset} runs past the end")
    return data[start:end], end


def _parse_revision(raw: bytes) -> int:
    if not raw.isdigit():
        raise DecodeError(f"revision {raw!r} is not a decimal integer")
    revision = int(raw)
    if revision < 1:
        raise DecodeError(f"revision {revision} is not positive")
    return revision


def decode_message(data: bytes) -> Message:
    """Decode one notification.

    Raises:
        DecodeError: Unknown operation, truncated or trailing bytes, or a bad revision. Keys
            and values that are not UTF-8 are decoded with ``surrogateescape``.
    """
    op, sep, rest = data.partition(b":")
    if not sep:
        raise DecodeError("no ':' after the operation")
    if op == b"set":
        key, offset = _take(rest, 0)
        value, offset = _take(rest, offset)
        rev, offset = _take(rest, offset)
        if offset != len(rest):
            raise DecodeError(f"{len(rest) - offset} trailing bytes")
        return Message(MessageKind.SET, _parse_revision(rev), text(key), text(value))
    if op == b"del":
        key, offset = _take(rest, 0)
        rev, offset = _take(rest, offset)
        if offset != len(rest):
            raise DecodeError(f"{len(rest) - offset} trailing bytes")
        return Message(MessageKind.DEL, _parse_revision(rev), text(key))
    if op in (b"reset", b"destroy"):
        return Message(MessageKind(op.decode()), _parse_revision(rest))
    raise DecodeError(f"unknown operation {op[:20]!r}")


def _lp(raw: bytes) -> bytes:
    return _LEN.pack(len(raw)) + raw


def _raw(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")  # the inverse of text()


def encode_message(message: Message) -> bytes:
    """Encode a notification exactly as the Lua scripts publish it (for tests and tools)."""
    rev = str(message.revision).encode()
    if message.kind is MessageKind.SET:
        assert message.key is not None
        assert message.value is not None
        key, value = _raw(message.key), _raw(message.value)
        return b"set:" + _lp(key) + _lp(value) + _lp(rev)
    if message.kind is MessageKind.DEL:
        assert message.key is not None
        return b"del:" + _lp(_raw(message.key)) + _lp(rev)
    kind: str = message.kind.value
    return kind.encode() + b":" + rev


def parse_values(raw: str) -> list[str]:
    """Read a list value the way goa.design/pulse's ``GetValues`` does.

    A JSON array of strings (after trimming white space) is the list; anything else is the
    legacy comma-separated form, split on every comma (so ``""`` is ``[""]``).
    """
    stripped = raw.strip()
    if stripped.startswith("["):
        try:
            decoded = json.loads(stripped)
        except ValueError:
            decoded = None
        if isinstance(decoded, list) and all(isinstance(item, str) for item in decoded):
            return decoded
    return raw.split(",")


def encode_values(values: list[str]) -> str:
    """Encode a list as Redis's Lua ``cjson.encode`` does (``/`` escaped as ``\\/``).

    Only used to predict stored bytes in tests and tools; writes always go through the scripts.
    """
    return json.dumps(values, ensure_ascii=False, separators=(",", ":")).replace("/", "\\/")


def snapshot_from_hash(raw: dict[bytes, bytes]) -> tuple[dict[str, str], int, str | None]:
    """Split an HGETALL reply into (user content, revision, last kind).

    A missing or unparsable ``=rev`` counts as revision 0.
    """
    content: dict[str, str] = {}
    revision = 0
    kind: str | None = None
    for field_raw, value_raw in raw.items():
        field = text(field_raw)
        value = text(value_raw)
        if field == REV_FIELD:
            revision = int(value) if value.isdigit() else 0
        elif field == KIND_FIELD:
            kind = value
        else:
            content[field] = value
    return content, revision, kind


class Action(enum.Enum):
    """What a replica does with a received message."""

    #: The next revision: apply it.
    APPLY = "apply"
    #: Already reflected (sent before the snapshot was taken): drop it.
    DROP = "drop"
    #: Messages were lost (a gap) or the counter went backwards: re-read everything.
    RESYNC = "resync"
    #: Lower than the local revision without a visible regression: ask Redis whether the
    #: counter was reset (hash expired or deleted) before dropping it.
    VERIFY = "verify"


def classify(local: int, last_received: int | None, received: int) -> Action:
    """Decide what to do with a message of revision ``received``.

    Args:
        local: The replica's revision.
        last_received: The revision of the previous message on this subscription, or ``None``
            for the first message since the subscription (re)started.
        received: The message's revision.

    Every committed write bumps the revision by exactly one and publishes once, and one
    subscription delivers messages in publication order. So on one subscription revisions
    strictly increase; ``local + 1`` is the only one to apply; anything higher means lost
    messages; a decrease means the counter was reset behind our back. Messages at or below
    ``local`` are expected only right after a (re)subscription, when they predate the
    snapshot.
    """
    if last_received is not None and received <= last_received:
        return Action.RESYNC
    if received == local + 1:
        return Action.APPLY
    if received > local + 1:
        return Action.RESYNC
    if last_received is None:
        return Action.VERIFY
    # Increasing on this subscription but not above local: still catching up to the snapshot.
    return Action.DROP
