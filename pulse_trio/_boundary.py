"""The one boundary between pulse-trio and its Redis client.

Everything that knows about the client's types and exceptions lives here: the ``Client``
type every entry point takes, which errors are transient (worth retrying), the translation
of the client's errors into pulse-trio's (:func:`map_redis_errors`), and how bytes read from
Redis become text (:func:`text` for values that may be written back, :func:`display` for
logs and messages). Other modules never import the client's exception classes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias

import coredis
from coredis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    NoScriptError,
    RedisError,
    StreamConsumerGroupError,
    StreamDuplicateConsumerGroupError,
    TryAgainError,
    UnblockedError,
    WrongTypeError,
)
from coredis.exceptions import ConnectionError as _ConnectionError

from ._coredis_compat import fix_client_pool
from ._errors import ClientConfigurationError, RedisCommandError, RedisUnavailableError
from ._text import display as display
from ._text import optional_text as optional_text
from ._text import strict_text as strict_text
from ._text import text as text

#: The Redis client every pulse-trio entry point takes: an entered coredis client created with
#: ``decode_responses=False`` (what :func:`pulse_trio.connect` yields).
Client: TypeAlias = coredis.Redis[Any] | coredis.RedisCluster[Any]

#: Exception types after which the same operation may succeed later: the connection was lost
#: or refused or timed out, the server is loading its data set, a cluster is reconfiguring,
#: or a script vanished from the server's cache (a restart or ``SCRIPT FLUSH`` racing with
#: the reload). :class:`RedisUnavailableError` is what they become at the boundary.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    _ConnectionError,
    BusyLoadingError,
    ClusterDownError,
    TryAgainError,
    NoScriptError,
    TimeoutError,
    OSError,
    RedisUnavailableError,
)


def is_cluster(client: Client) -> bool:
    """Whether ``client`` talks to a Redis Cluster (keys may live on different nodes)."""
    return isinstance(client, coredis.RedisCluster)


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
    return bool(parts) and all(isinstance(part, TRANSIENT_ERRORS) for part in parts)


def is_wrong_type(exc: BaseException) -> bool:
    """Whether Redis answered ``WRONGTYPE`` (a key holds another kind of value)."""
    if isinstance(exc, WrongTypeError):
        return True
    return isinstance(exc, RedisError) and str(exc).startswith("WRONGTYPE")


def is_group_missing(exc: BaseException) -> bool:
    """Whether a consumer group or its stream is gone (a destroyed stream, lost state).

    Also for a :class:`RedisCommandError` that :func:`map_redis_errors` made of such a reply.
    """
    if isinstance(exc, RedisCommandError) and exc.__cause__ is not None:
        return is_group_missing(exc.__cause__)
    if isinstance(exc, StreamConsumerGroupError | UnblockedError):
        return True
    message = str(exc)
    return isinstance(exc, RedisError) and (
        "NOGROUP" in message
        or "no such key" in message.lower()
        # XGROUP CREATECONSUMER on a stream destroyed since its group was created.
        or "requires the key to exist" in message
    )


def is_group_exists(exc: BaseException) -> bool:
    """Whether ``XGROUP CREATE`` found the group already there (``BUSYGROUP``)."""
    if isinstance(exc, StreamDuplicateConsumerGroupError):
        return True
    return isinstance(exc, RedisError) and str(exc).startswith("BUSYGROUP")


def is_no_such_key(exc: BaseException) -> bool:
    """Whether Redis answered that the key does not exist (``XINFO`` of a missing stream)."""
    return isinstance(exc, RedisError) and "no such key" in str(exc).lower()


def error_reply(exc: BaseException) -> str | None:
    """The text of a Redis error reply (``ERR ...``), ``None`` for any other exception."""
    if isinstance(exc, RedisError) and not isinstance(exc, _ConnectionError):
        return str(exc)
    return None


@contextlib.contextmanager
def map_redis_errors(
    operation: str,
    *,
    wrong_type: Callable[[], Exception] | None = None,
    reply: Callable[[str], Exception | None] | None = None,
    hint: str = "retry later",
) -> Iterator[None]:
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
    try:
        yield
    except Exception as exc:
        translated = to_pulse_error(exc, operation, wrong_type=wrong_type, reply=reply, hint=hint)
        if translated is exc:
            raise
        raise translated from exc


def to_pulse_error(
    exc: Exception,
    operation: str,
    *,
    wrong_type: Callable[[], Exception] | None = None,
    reply: Callable[[str], Exception | None] | None = None,
    hint: str = "retry later",
) -> Exception:
    """The pulse-trio error for an error of the Redis client (see :func:`map_redis_errors`).

    Returns ``exc`` itself when it is not the client's (or is already pulse-trio's).
    """
    if isinstance(exc, RedisUnavailableError):
        return exc
    if isinstance(exc, TRANSIENT_ERRORS):
        return RedisUnavailableError(f"{operation} failed: Redis is unreachable ({exc!r}); {hint}")
    if isinstance(exc, RedisError):
        if wrong_type is not None and is_wrong_type(exc):
            return wrong_type()
        if reply is not None:
            replaced = reply(str(exc))
            if replaced is not None:
                return replaced
        return RedisCommandError(f"{operation} failed: Redis answered {str(exc)!r}")
    return exc


def check_client(client: object, logger: logging.Logger | None = None) -> None:
    """Check, before any I/O, that ``client`` can be used by pulse-trio.

    A client pulse-trio did not build gets coredis 6.9's pool-slot fix on its own pool when
    its code is recognised (see :mod:`pulse_trio._coredis_compat`).

    Raises:
        TypeError: ``client`` is not a coredis client.
        ClientConfigurationError: The client decodes responses (pulse-trio needs bytes).
    """
    if not isinstance(client, coredis.Redis | coredis.RedisCluster):
        raise TypeError(
            "client must be a coredis.Redis or coredis.RedisCluster (pulse_trio.connect() "
            f"opens one), not {type(client).__name__}"
        )
    if getattr(client, "decode_responses", False):
        raise ClientConfigurationError(
            "pulse-trio needs a coredis client created with decode_responses=False "
            "(pulse_trio.connect() creates one)"
        )
    fix_client_pool(client, logger)
