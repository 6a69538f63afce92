"""Where a server is and how to reach it: :class:`Address`, :class:`ConnectionSettings` with
the transport's documented defaults, and :class:`Backoff` between reconnection attempts.

Values only, no I/O: every other module of the transport builds on these.
"""

from __future__ import annotations

import math
import random
import ssl
from typing import Final

import attrs

#: Default bound on opening a connection and its handshake, in seconds.
CONNECT_TIMEOUT: Final = 5.0
#: Default bound on a reply on the multiplexed connection, in seconds: a connection that
#: answers nothing for that long while requests wait is replaced (frozen or half-open).
COMMAND_TIMEOUT: Final = 10.0
#: A connection idle for that long (seconds) is PINGed to find out whether it still works.
HEALTH_CHECK_INTERVAL: Final = 5.0
#: Default bound on the requests outstanding on one multiplexed connection.
MAX_PENDING: Final = 4096
#: Default number of dedicated connections per server for blocking commands.
MAX_BLOCKING_CONNECTIONS: Final = 64
#: Reconnection backoff: first delay and cap, in seconds (each delay is jittered).
BACKOFF_INITIAL: Final = 0.05
BACKOFF_MAX: Final = 2.0
#: The longest timeout or interval accepted, in seconds (about 31 years): longer ones are
#: surely a mistake (a value in milliseconds, say) and overflow the deadlines derived from them.
MAX_SECONDS: Final = 1e9


def check_seconds(what: str, value: object) -> float:
    """Return ``value`` as seconds if it is a finite number in ``(0, MAX_SECONDS]``.

    Raises:
        TypeError: Not an int or float (a bool, a str, ``None``...); the message names ``what``.
        ValueError: Zero, negative, NaN, infinite or past :data:`MAX_SECONDS`.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_SECONDS:
        raise ValueError(
            f"{what} must be a number of seconds in (0, {MAX_SECONDS:g}], got {value!r}"
        )
    return seconds


def check_count(what: str, value: object) -> int:
    """Return ``value`` if it is an ``int >= 1``.

    Raises:
        TypeError: Not an int (a bool, a float, ``None``...); the message names ``what``.
        ValueError: Less than 1.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{what} must be >= 1, got {value!r}")
    return value


def check_client_name(value: object) -> str | None:
    """Return ``value`` if it is ``None`` or a name ``CLIENT SETNAME`` accepts (printable
    ASCII without spaces).

    Raises:
        TypeError: Not a str or ``None``.
        ValueError: It holds a space, a control character or a character past ASCII.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"client_name must be a str or None, not {type(value).__name__}")
    if any(not "!" <= char <= "~" for char in value):
        raise ValueError(
            f"client_name must be printable ASCII without spaces (CLIENT SETNAME), got {value!r}"
        )
    return value


@attrs.frozen
class Address:
    """Where a server listens: ``host`` and ``port``, or a Unix socket ``path``."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"


@attrs.frozen
class ConnectionSettings:
    """How to open and use connections (every field has the documented default).

    Attributes:
        username: ACL user (``None``: the default user).
        password: Password (``None``: no AUTH).
        db: Database number selected on every connection.
        client_name: ``CLIENT SETNAME`` of every connection, or ``None``.
        protocol: RESP version, 2 or 3 (``HELLO``); 3 by default.
        ssl_context: TLS context; ``None`` for plain connections.
        tls_hostname: Host name checked against the server's certificate (default: the host).
        connect_timeout: Bound on connect + handshake, seconds.
        command_timeout: Bound on a reply, seconds (see :data:`COMMAND_TIMEOUT`).
        health_check_interval: Idle time after which a connection is PINGed, seconds.
        max_pending: Bound on outstanding requests per multiplexed connection.
    """

    username: str | None = None
    password: str | None = None
    db: int = 0
    client_name: str | None = None
    protocol: int = 3
    ssl_context: ssl.SSLContext | None = None
    tls_hostname: str | None = None
    connect_timeout: float = CONNECT_TIMEOUT
    command_timeout: float = COMMAND_TIMEOUT
    health_check_interval: float = HEALTH_CHECK_INTERVAL
    max_pending: int = MAX_PENDING


class Backoff:
    """Jittered exponential delays between reconnection attempts (pure, no I/O)."""

    def __init__(self, initial: float = BACKOFF_INITIAL, maximum: float = BACKOFF_MAX) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0

    def next_delay(self) -> float:
        """Count one more failure; return how long to wait before the next attempt."""
        self.failures += 1
        ceiling = min(self.maximum, self.initial * 2 ** min(self.failures - 1, 30))
        return float(ceiling * random.uniform(0.5, 1.0))

    def reset(self) -> None:
        """Forget the failures (after a success)."""
        self.failures = 0
