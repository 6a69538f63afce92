"""pulse-trio: event streams, worker pools and replicated maps on Redis, for Trio and asyncio.

The packages are :mod:`pulse_trio.rmap` (replicated maps), :mod:`pulse_trio.streaming`
(streams, readers, sinks) and :mod:`pulse_trio.pool` (worker pools). This top-level module
re-exports what they share: the Redis client every entry point takes (:class:`Client`,
opened by :func:`connect`; :func:`url_of` for code that holds a coredis client), a throwaway
local server (:func:`embedded`; more control in :mod:`pulse_trio.testing`) and the root of
the error hierarchy.
"""

from typing import Any as _Any

from ._connect import connect as connect
from ._connect import url_of as url_of
from ._embedded import embedded as embedded
from ._errors import ClosedError as ClosedError
from ._errors import InvalidNameError as InvalidNameError
from ._errors import PulseError as PulseError
from ._errors import RedisCommandError as RedisCommandError
from ._errors import RedisUnavailableError as RedisUnavailableError
from ._redis import Client as Client

__version__ = "0.1.0"

__all__ = (
    "Client",
    "ClosedError",
    "InvalidNameError",
    "PulseError",
    "RedisCommandError",
    "RedisUnavailableError",
    "__version__",
    "connect",
    "embedded",
    "url_of",
)

#: Names that moved to :mod:`pulse_trio.testing`; still reachable here for code written
#: against pulse-trio 0.1.0.
_MOVED_TO_TESTING = frozenset({"EmbeddedCluster", "EmbeddedServer", "EmbeddedServerError"})


def __getattr__(name: str) -> _Any:
    if name in _MOVED_TO_TESTING:
        from . import testing

        return getattr(testing, name)
    raise AttributeError(f"module 'pulse_trio' has no attribute {name!r}")
