"""The sans-I/O core of the Redis transport: bytes in, replies out, no sockets.

This module knows the RESP protocol and nothing about networking, in the spirit of h11: the
drivers (:mod:`._direct`, :mod:`._multiplexed`, :mod:`._pubsub`) own the sockets and the
tasks, and move bytes between them and the objects here (:mod:`._requests` keeps the
bookkeeping of a shared connection's waiters on top of it). Tests drive these objects with
plain bytes.

- :func:`encode_command` turns a command into the bytes of a RESP request (hiredis's
  ``pack_command``, implemented in C).
- :class:`RespState` is the state of one connection: requests queued for the next send, the
  FIFO of requests whose replies are awaited, and the hiredis reader that parses what the
  server sends. It matches every reply to the oldest waiting request: Redis answers the
  requests of one connection in the order it received them.
- :class:`PubSubState` is the state of a subscriber connection: which channels and patterns
  are wanted and confirmed, published messages, and PING replies.

Parsing is hiredis's (``hiredis.Reader``); no RESP parser is written here. Replies are
returned the way hiredis builds them: ``bytes`` for strings (simple, bulk, verbatim, big
numbers), ``int``, ``float`` (RESP3 doubles), ``bool`` (RESP3 booleans), ``None`` (nulls),
``list`` (arrays and sets), ``dict`` (RESP3 maps), and :class:`ResponseError` *instances* for
error replies (also nested inside arrays, as in the reply to ``EXEC``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Generic, NoReturn, TypeVar

import attrs
import hiredis

from .._errors import PulseError, RedisCommandError, UnencodableTextError

#: What a command argument may be: bytes are sent as they are, ``str`` as UTF-8 (with
#: ``surrogateescape``: see :func:`encode_text`), numbers in their decimal form.
Arg = bytes | str | int | float | memoryview

_T = TypeVar("_T")


class ResponseError(RedisCommandError):
    """Redis answered a command with an error reply (a :class:`pulse_trio.RedisCommandError`).

    Attributes:
        message: The whole error message, e.g. ``"WRONGTYPE Operation against a key ..."``.
        code: Its first word (``"ERR"``, ``"WRONGTYPE"``, ``"NOSCRIPT"``, ``"MOVED"``,
            ``"ASK"``, ``"NOAUTH"``, ``"WRONGPASS"``, ``"READONLY"``, ...).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = message.split(" ", 1)[0]


class ProtocolError(PulseError):
    """The server sent bytes that are not RESP; the connection cannot be used any further."""


def encode_text(value: str) -> bytes:
    """The bytes a ``str`` argument is sent as: UTF-8, with U+DC80..U+DCFF written as the
    bytes they stand for (``surrogateescape``, the inverse of how replies are decoded into
    text, :func:`pulse_trio._text.text`), so text read from Redis can be written back.

    Raises:
        UnencodableTextError: ``value`` holds another surrogate (``"\\ud800"``): no bytes.
    """
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise UnencodableTextError(value) from None


def encode_command(args: Sequence[Arg]) -> bytes:
    """Return the RESP request (an array of bulk strings) for one command.

    Callers encode their command in their own task before it joins a shared write, so an
    argument that cannot be encoded fails that caller alone.

    Args:
        args: The command name and its arguments, e.g. ``("XADD", key, "*", "n", name)``.

    Raises:
        ValueError: ``args`` is empty.
        TypeError: An argument is of none of the types of :data:`Arg`.
        UnencodableTextError: A ``str`` argument cannot be encoded (see :func:`encode_text`);
            also a ``ValueError``.
    """
    if not args:
        raise ValueError("a command needs at least its name")
    try:
        return hiredis.pack_command(tuple(args))  # type: ignore[arg-type,no-any-return]
    except UnicodeEncodeError:
        pass  # hiredis encodes str strictly: the surrogate-escaped ones go as their bytes
    except TypeError:
        _raise_type_error(args)
    escaped = tuple(encode_text(a) if isinstance(a, str) else a for a in args)
    try:
        return hiredis.pack_command(escaped)  # type: ignore[arg-type,no-any-return]
    except TypeError:
        _raise_type_error(args)


def _raise_type_error(args: Sequence[Arg]) -> NoReturn:
    # hiredis says only that some item is wrong: name it (bools are refused too).
    for arg in args:
        if type(arg) is bool or not isinstance(arg, bytes | str | int | float | memoryview):
            raise TypeError(
                f"cannot send {type(arg).__name__} {arg!r} to Redis: use bytes, str, int or float"
            ) from None
    raise TypeError(f"cannot send {args!r} to Redis")


def _new_reader() -> hiredis.Reader:
    return hiredis.Reader(replyError=ResponseError, notEnoughData=_NOT_ENOUGH_DATA)


# hiredis returns this object (instead of False, a valid RESP3 reply) when it needs more bytes.
_NOT_ENOUGH_DATA: Any = object()


class RespState(Generic[_T]):
    """The protocol state of one Redis connection (no I/O).

    The driver calls :meth:`queue` for each request, with a token of its own choosing (``None``
    when nobody waits for the reply: the reply is then dropped), sends the bytes returned by
    :meth:`data_to_send`, and passes what it receives to :meth:`receive_data`, which returns
    the ``(token, reply)`` pairs completed by those bytes, in request order. Push messages
    (RESP3 ``>`` frames, e.g. client-side caching invalidations) are never matched to a
    request; they are returned by :meth:`receive_data` with the token :data:`PUSH`.
    """

    def __init__(self) -> None:
        self._reader = _new_reader()
        self._outgoing: list[bytes] = []
        # Requests whose reply has not arrived yet, oldest first. The last ``_unsent`` of them
        # are still in ``_outgoing`` (never handed to the driver).
        self._waiting: deque[_T | None] = deque()
        self._unsent = 0
        self._broken = False

    @property
    def waiting(self) -> int:
        """Requests queued or sent whose reply has not arrived yet."""
        return len(self._waiting)

    @property
    def unsent(self) -> int:
        """Requests queued since the last :meth:`data_to_send` (not yet handed out)."""
        return self._unsent

    def has_data_to_send(self) -> bool:
        """Whether :meth:`data_to_send` would return bytes."""
        return bool(self._outgoing)

    def queue(self, token: _T | None, request: bytes) -> None:
        """Queue one encoded request (from :func:`encode_command`).

        Args:
            token: Handed back with the reply by :meth:`receive_data`; ``None`` to drop it.
            request: The request's bytes.

        Raises:
            ProtocolError: The connection already received bytes that are not RESP.
        """
        if self._broken:
            raise ProtocolError("the connection received invalid data and cannot be used")
        self._outgoing.append(request)
        self._waiting.append(token)
        self._unsent += 1

    def data_to_send(self) -> bytes:
        """Return the bytes of every request queued since the last call (maybe ``b""``)."""
        if not self._outgoing:
            return b""
        data = self._outgoing[0] if len(self._outgoing) == 1 else b"".join(self._outgoing)
        self._outgoing.clear()
        self._unsent = 0
        return data

    def unsend(self, data: bytes) -> None:
        """Put back, before anything queued since, the part of :meth:`data_to_send`'s bytes
        that the driver could not send (a partial write). Their requests still count as
        handed out."""
        if data:
            self._outgoing.insert(0, data)

    def receive_data(self, data: bytes) -> list[tuple[_T | None, Any]]:
        """Parse bytes received from the server.

        Returns:
            ``(token, reply)`` for every reply completed by ``data`` (in order), with
            :data:`PUSH` as the token of push messages. Error replies are
            :class:`ResponseError` instances, not raised.

        Raises:
            ProtocolError: ``data`` is not RESP, or a reply arrived that no request awaits.
                The state is then unusable.
        """
        reader = self._reader
        reader.feed(data)
        completed: list[tuple[_T | None, Any]] = []
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self._broken = True
                raise ProtocolError(f"invalid data from the server: {exc}") from exc
            if reply is _NOT_ENOUGH_DATA:
                return completed
            if type(reply) is hiredis.PushNotification:
                completed.append((PUSH, list(reply)))
                continue
            if not self._waiting or len(self._waiting) == self._unsent:
                self._broken = True
                raise ProtocolError(f"unexpected reply {reply!r}: no request was waiting for one")
            completed.append((self._waiting.popleft(), reply))

    def fail(self) -> tuple[list[_T], list[_T]]:
        """Forget every waiting request, as when the connection is lost.

        Returns:
            ``(sent, unsent)``: the tokens of requests whose bytes were handed to the driver
            (the server may have executed them) and of those never handed out (certainly not
            executed), oldest first, without ``None`` tokens.
        """
        waiting = [t for t in self._waiting]
        split = len(waiting) - self._unsent
        self._waiting.clear()
        self._outgoing.clear()
        self._unsent = 0
        self._broken = True
        return (
            [t for t in waiting[:split] if t is not None],
            [t for t in waiting[split:] if t is not None],
        )


class _Push:
    """Type of :data:`PUSH`."""

    def __repr__(self) -> str:
        return "PUSH"


#: The token :meth:`RespState.receive_data` gives push messages.
PUSH: Any = _Push()


# --- pub/sub ------------------------------------------------------------------------------


@attrs.frozen
class Message:
    """A message published on a channel the subscriber listens to.

    Attributes:
        channel: The channel it was published on.
        data: Its payload.
        pattern: The pattern that matched ``channel`` (for pattern subscriptions), else ``None``.
    """

    channel: bytes
    data: bytes
    pattern: bytes | None = None


@attrs.frozen
class Pong:
    """The reply to a PING sent on a subscriber connection."""


@attrs.frozen
class Confirmation:
    """The server confirmed a SUBSCRIBE/UNSUBSCRIBE (or the pattern forms).

    Attributes:
        kind: ``b"subscribe"``, ``b"unsubscribe"``, ``b"psubscribe"`` or ``b"punsubscribe"``.
        name: The channel or pattern.
        count: How many subscriptions the connection has after it.
    """

    kind: bytes
    name: bytes
    count: int


PubSubEvent = Message | Pong | Confirmation | ResponseError

_SUBSCRIBE_KINDS = {b"subscribe", b"unsubscribe", b"psubscribe", b"punsubscribe"}


def _as_bytes(name: Arg) -> bytes:
    if isinstance(name, str):
        return encode_text(name)
    if isinstance(name, bytes):
        return name
    return str(name).encode()


class PubSubState:
    """The state of one subscriber connection (no I/O).

    It remembers the channels and patterns the owner wants (they are subscribed again on a new
    connection by :meth:`resubscribe`) and which ones the server confirmed, and turns what the
    server sends into :class:`Message`, :class:`Pong` and :class:`Confirmation` events. It
    accepts both protocol versions: RESP2 replies (arrays, ``["pong", ""]``) and RESP3 pushes.
    """

    def __init__(self) -> None:
        self._resp: RespState[None] = RespState()
        self.channels: set[bytes] = set()
        self.patterns: set[bytes] = set()
        self.confirmed_channels: set[bytes] = set()
        self.confirmed_patterns: set[bytes] = set()

    def data_to_send(self) -> bytes:
        """Return the bytes of every request queued since the last call."""
        return self._resp.data_to_send()

    def _send(self, *args: Arg) -> None:
        # Subscription commands get their answers as pushes/arrays matched by kind, not by
        # FIFO position: they are queued without a waiting slot.
        self._resp._outgoing.append(encode_command(args))

    def subscribe(self, channels: Iterable[Arg] = (), patterns: Iterable[Arg] = ()) -> None:
        """Want these channels and patterns too; queue the requests."""
        new_channels = {_as_bytes(c) for c in channels} - self.channels
        new_patterns = {_as_bytes(p) for p in patterns} - self.patterns
        self.channels |= new_channels
        self.patterns |= new_patterns
        if new_channels:
            self._send("SUBSCRIBE", *sorted(new_channels))
        if new_patterns:
            self._send("PSUBSCRIBE", *sorted(new_patterns))

    def unsubscribe(self, channels: Iterable[Arg] = (), patterns: Iterable[Arg] = ()) -> None:
        """Stop wanting these channels and patterns; queue the requests."""
        gone_channels = {_as_bytes(c) for c in channels} & self.channels
        gone_patterns = {_as_bytes(p) for p in patterns} & self.patterns
        self.channels -= gone_channels
        self.patterns -= gone_patterns
        if gone_channels:
            self._send("UNSUBSCRIBE", *sorted(gone_channels))
        if gone_patterns:
            self._send("PUNSUBSCRIBE", *sorted(gone_patterns))

    def ping(self) -> None:
        """Queue a PING; its answer is a :class:`Pong` event."""
        self._send("PING")

    def resubscribe(self) -> None:
        """Start over on a new connection: forget confirmations, queue every subscription."""
        self._resp = RespState()
        self.confirmed_channels.clear()
        self.confirmed_patterns.clear()
        if self.channels:
            self._send("SUBSCRIBE", *sorted(self.channels))
        if self.patterns:
            self._send("PSUBSCRIBE", *sorted(self.patterns))

    @property
    def ready(self) -> bool:
        """Whether every wanted channel and pattern is confirmed."""
        return self.channels <= self.confirmed_channels and self.patterns <= (
            self.confirmed_patterns
        )

    def receive_data(self, data: bytes) -> list[PubSubEvent]:
        """Parse bytes from the server into events, updating the confirmed sets.

        Raises:
            ProtocolError: ``data`` is not RESP or not what a subscriber connection receives.
        """
        reader = self._resp._reader
        reader.feed(data)
        events: list[PubSubEvent] = []
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                raise ProtocolError(f"invalid data from the server: {exc}") from exc
            if reply is _NOT_ENOUGH_DATA:
                return events
            events.append(self._event(reply))

    def _event(self, reply: Any) -> PubSubEvent:
        if isinstance(reply, ResponseError):
            return reply
        if reply == b"PONG":  # RESP3 PING reply
            return Pong()
        if not isinstance(reply, list) or not reply:
            raise ProtocolError(f"unexpected reply on a subscriber connection: {reply!r}")
        kind = reply[0]
        if kind == b"message" and len(reply) == 3:
            return Message(reply[1], reply[2])
        if kind == b"pmessage" and len(reply) == 4:
            return Message(reply[2], reply[3], pattern=reply[1])
        if kind == b"pong":  # RESP2 PING reply in subscribed mode
            return Pong()
        if kind in _SUBSCRIBE_KINDS and len(reply) == 3:
            name, count = reply[1], reply[2]
            if kind == b"subscribe":
                self.confirmed_channels.add(name)
            elif kind == b"unsubscribe":
                self.confirmed_channels.discard(name)
            elif kind == b"psubscribe":
                self.confirmed_patterns.add(name)
            else:
                self.confirmed_patterns.discard(name)
            return Confirmation(kind, name, int(count))
        raise ProtocolError(f"unexpected reply on a subscriber connection: {reply!r}")
