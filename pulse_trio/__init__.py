"""pulse-trio: event streams, worker pools and replicated maps on Redis, for Trio and asyncio.

The packages are :mod:`pulse_trio.rmap` (replicated maps), :mod:`pulse_trio.streaming`
(streams, readers, sinks) and :mod:`pulse_trio.pool` (worker pools). This top-level module
re-exports what they share.
"""

from . import _coredis_compat
from ._connect import connect as connect
from ._embedded import EmbeddedCluster as EmbeddedCluster
from ._embedded import EmbeddedServer as EmbeddedServer
from ._embedded import EmbeddedServerError as EmbeddedServerError
from ._embedded import embedded as embedded
from ._errors import ClientConfigurationError as ClientConfigurationError
from ._errors import ClosedError as ClosedError
from ._errors import InvalidNameError as InvalidNameError
from ._errors import PulseError as PulseError
from ._errors import RedisUnavailableError as RedisUnavailableError

__version__ = "0.1.0"

_coredis_compat.apply()

__all__ = (
    "ClientConfigurationError",
    "ClosedError",
    "EmbeddedCluster",
    "EmbeddedServer",
    "EmbeddedServerError",
    "InvalidNameError",
    "PulseError",
    "RedisUnavailableError",
    "__version__",
    "connect",
    "embedded",
)
