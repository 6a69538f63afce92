"""Which Redis errors are transient, and how long to wait before trying again."""

from __future__ import annotations

import random

from coredis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    TryAgainError,
)
from coredis.exceptions import (
    ConnectionError as RedisConnectionError,
)

#: Errors after which the same operation may succeed later: the connection was lost or
#: refused, the server is loading its data set, or a cluster is reconfiguring.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    BusyLoadingError,
    ClusterDownError,
    TryAgainError,
    TimeoutError,
    OSError,
)


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


def backoff_delay(attempt: int, *, base: float = 0.05, cap: float = 5.0) -> float:
    """Half-to-full jittered exponential backoff for retry number ``attempt`` (0-based)."""
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    return random.uniform(ceiling / 2, ceiling)
