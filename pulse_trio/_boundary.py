"""The one boundary between pulse-trio and its Redis client.

Everything that knows about the client's types and exceptions lives here: the ``Client``
type every entry point takes, which errors are transient (worth retrying), the translation
of the client's errors into pulse-trio's (:func:`map_redis_errors`), and how bytes read from
Redis become text (:func:`text` for values that may be written back, :func:`display` for
logs and messages). Other modules never import the client's exception classes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, NoReturn, TypeAlias

from ._errors import RedisCommandError, RedisUnavailableError
from ._redis import Client as _TransportClient
from ._redis import ResponseError
from ._text import display as display
from ._text import optional_text as optional_text
from ._text import strict_text as strict_text
from ._text import text as text

#: The Redis client every pulse-trio entry point takes: pulse-trio's own transport (what
#: :func:`pulse_trio.connect` yields).
Client: TypeAlias = _TransportClient

#: Exception types after which the same operation may succeed later: the connection was lost
#: or refused or timed out. :class:`RedisUnavailableError` (and its subclass
#: ``ConnectionLostError``) is what the transport raises for them; the others come from the
#: operating system. Error replies that are transient too are listed in
#: :data:`TRANSIENT_REPLY_CODES`; :func:`is_transient` checks both.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisUnavailableError,
    TimeoutError,
    OSError,
)

#: Error replies after which the same command may succeed later: the server is loading its
#: data set, a cluster or a primary is reconfiguring (a failover in progress), or a script
#: vanished from the server's cache (a restart or ``SCRIPT FLUSH`` racing with the reload).
TRANSIENT_REPLY_CODES = frozenset(
    {"LOADING", "CLUSTERDOWN", "TRYAGAIN", "NOSCRIPT", "MASTERDOWN", "READONLY"}
)


def is_cluster(client: Client) -> bool:
    """Whether ``client`` talks to a Redis Cluster (keys may live on different nodes)."""
    return client.is_cluster


def leaves(exc: BaseException) -> list[BaseException]:
    """Flatten (nested) exception groups into their leaf exceptions."""
    if isinstance(exc, BaseExceptionGroup):
        found: list[BaseException] = []
        for inner in exc.exceptions:
            found.extend(leaves(inner))
        return found
    return [exc]


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or every leaf of an exception group) is a transient Redis error."""
    parts = leaves(exc)
    return bool(parts) and all(_is_transient_leaf(part) for part in parts)


def _is_transient_leaf(exc: BaseException) -> bool:
    if isinstance(exc, ResponseError):
        return exc.code in TRANSIENT_REPLY_CODES
    return isinstance(exc, TRANSIENT_ERRORS)


def is_wrong_type(exc: BaseException) -> bool:
    """Whether Redis answered ``WRONGTYPE`` (a key holds another kind of value)."""
    return isinstance(exc, ResponseError) and exc.code == "WRONGTYPE"


def is_group_missing(exc: BaseException) -> bool:
    """Whether a consumer group or its stream is gone (a destroyed stream, lost state).

    Also for a :class:`RedisCommandError` that :func:`map_redis_errors` made of such a reply.
    """
    if isinstance(exc, RedisCommandError) and exc.__cause__ is not None:
        return is_group_missing(exc.__cause__)
    if not isinstance(exc, ResponseError):
        return False
    message = exc.message
    return (
        exc.code in ("NOGROUP", "UNBLOCKED")
        or "no such key" in message.lower()
        # XGROUP CREATECONSUMER on a stream destroyed since its group was created.
        or "requires the key to exist" in message
    )


def is_group_exists(exc: BaseException) -> bool:
    """Whether ``XGROUP CREATE`` found the group already there (``BUSYGROUP``)."""
    return isinstance(exc, ResponseError) and exc.code == "BUSYGROUP"


def is_no_such_key(exc: BaseException) -> bool:
    """Whether Redis answered that the key does not exist (``XINFO`` of a missing stream)."""
    return isinstance(exc, ResponseError) and "no such key" in exc.message.lower()


def error_reply(exc: BaseException) -> str | None:
    """The text of a Redis error reply (``ERR ...``), ``None`` for any other exception."""
    if isinstance(exc, ResponseError):
        return exc.message
    return None


def map_redis_errors(
    operation: str,
    *,
    wrong_type: Callable[[], Exception] | None = None,
    reply: Callable[[str], Exception | None] | None = None,
    hint: str = "retry later",
) -> AbstractContextManager[None]:
    """Translate the Redis client's errors raised in the block into pulse-trio's.

    Args:
        operation: What was being done, for the message ("map 'x': set of key 'k'").
        wrong_type: Builds the error for a ``WRONGTYPE`` reply (default: a
            :class:`RedisCommandError`).
        reply: Given the text of any other error reply, returns the error to raise instead,
            or ``None`` to raise a :class:`RedisCommandError`.
        hint: What to do next, ending the message of :class:`RedisUnavailableError`.

    Raises:
        RedisUnavailableError: A transient error (see :data:`TRANSIENT_ERRORS`).
        RedisCommandError: Redis rejected a command (an error reply not handled above).

    Errors that are not the client's pass unchanged; the client's error is always chained
    as the ``__cause__``.
    """
    return _RedisErrors(operation, wrong_type, reply, hint)


def raise_pulse_error(
    exc: Exception,
    operation: str,
    *,
    reply: Callable[[str], Exception | None] | None = None,
    hint: str = "retry later",
) -> NoReturn:
    """Raise what :func:`map_redis_errors` would for ``exc``, from an ``except`` clause: for
    hot paths, where even the context manager's message is too much on success.

    Raises:
        Exception: The translation of ``exc`` (chained), or ``exc`` itself when it is not
            the client's.
    """
    translated = to_pulse_error(exc, operation, reply=reply, hint=hint)
    if translated is exc:
        raise exc
    raise translated from exc


class ErrorMapping:
    """A context manager translating the Redis client's errors raised in its block into
    pulse-trio's (:meth:`translate`); cancellations and other ``BaseException`` pass. A plain
    object, not a generator: one is on the path of most calls of the packages, and a
    subclass builds its message only when there is an error."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not isinstance(exc, Exception):
            return  # no error, or a cancellation and its kin: unchanged
        translated = self.translate(exc)
        if translated is exc:
            return
        raise translated from exc

    def translate(self, exc: Exception) -> Exception:
        """The error to raise instead of ``exc`` (``exc`` itself to let it pass)."""
        raise NotImplementedError


class _RedisErrors(ErrorMapping):
    __slots__ = ("_hint", "_operation", "_reply", "_wrong_type")

    def __init__(
        self,
        operation: str,
        wrong_type: Callable[[], Exception] | None,
        reply: Callable[[str], Exception | None] | None,
        hint: str,
    ) -> None:
        self._operation = operation
        self._wrong_type = wrong_type
        self._reply = reply
        self._hint = hint

    def translate(self, exc: Exception) -> Exception:
        return to_pulse_error(
            exc, self._operation, wrong_type=self._wrong_type, reply=self._reply, hint=self._hint
        )


def to_pulse_error(
    exc: Exception,
    operation: str,
    *,
    wrong_type: Callable[[], Exception] | None = None,
    reply: Callable[[str], Exception | None] | None = None,
    hint: str = "retry later",
) -> Exception:
    """The pulse-trio error for an error of the Redis client (see :func:`map_redis_errors`).

    Returns ``exc`` itself when it is not the client's (or already names ``operation``).
    """
    if isinstance(exc, RedisUnavailableError):
        if str(exc).startswith(operation):
            return exc  # already says what failed (an inner map_redis_errors)
        # The transport's own (a lost connection...) says nothing of the operation.
        return RedisUnavailableError(f"{operation} failed: Redis is unreachable ({exc}); {hint}")
    if _is_transient_leaf(exc):
        return RedisUnavailableError(f"{operation} failed: Redis is unreachable ({exc!r}); {hint}")
    if isinstance(exc, ResponseError):
        if wrong_type is not None and is_wrong_type(exc):
            return wrong_type()
        if reply is not None:
            replaced = reply(exc.message)
            if replaced is not None:
                return replaced
        return RedisCommandError(f"{operation} failed: Redis answered {exc.message!r}")
    return exc


def check_client(client: object) -> None:
    """Check, before any I/O, that ``client`` can be used by pulse-trio.

    Raises:
        TypeError: ``client`` is not a :class:`pulse_trio.Client` (a coredis client gets a
            message that says how to open one with the same settings).
    """
    if isinstance(client, _TransportClient):
        return
    kind = type(client)
    if kind.__module__.split(".")[0] == "coredis":
        raise TypeError(
            "pulse-trio takes a pulse_trio.Client, not a coredis client: open one with "
            "pulse_trio.connect(url), or with the same settings as your coredis client with "
            "pulse_trio.connect(pulse_trio.url_of(coredis_client))"
        )
    raise TypeError(
        "client must be a pulse_trio.Client (pulse_trio.connect(url) opens one), "
        f"not {kind.__name__}"
    )


def as_dict(reply: Any) -> dict[Any, Any]:
    """A map reply as a ``dict``: RESP3 maps come as one; RESP2 sends a flat list
    ``[field, value, field, value...]`` (and ``None``/empty for nothing)."""
    if isinstance(reply, dict):
        return reply
    if not reply:
        return {}
    return dict(zip(reply[::2], reply[1::2], strict=True))


def stream_entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of an ``XRANGE``/``XCLAIM`` reply as ``(id, fields)`` pairs (entries
    deleted since they were delivered come back with no fields)."""
    return [(ident, as_dict(fields)) for ident, fields in reply or ()]


def read_reply(reply: Any) -> dict[bytes, list[tuple[bytes, dict[bytes, bytes]]]]:
    """An ``XREAD``/``XREADGROUP`` reply as ``{stream key: [(id, fields), ...]}``: a map in
    RESP3, a list of ``[key, entries]`` pairs in RESP2, ``None`` when the block ran out."""
    if not reply:
        return {}
    pairs = reply.items() if isinstance(reply, dict) else reply
    return {key: stream_entries(entries) for key, entries in pairs}
