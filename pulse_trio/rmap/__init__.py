"""Replicated maps: a Redis hash mirrored in every process, read locally.

::

    async with rmap.join(client, "config") as m:
        await m.set_and_wait("flag", "on")
        assert m.get("flag") == "on"

Wire-compatible with goa.design/pulse's ``rmap``: Go and Python processes can join the same map.
"""

from ._errors import InvalidKeyError as InvalidKeyError
from ._errors import InvalidValueError as InvalidValueError
from ._errors import MapClosedError as MapClosedError
from ._errors import MapValueError as MapValueError
from ._errors import RMapError as RMapError
from ._map import DEFAULT_PING_INTERVAL as DEFAULT_PING_INTERVAL
from ._map import DEFAULT_PING_TIMEOUT as DEFAULT_PING_TIMEOUT
from ._map import Map as Map
from ._map import MapStatistics as MapStatistics
from ._map import join as join
from ._protocol import EventKind as EventKind
from ._subscription import Subscription as Subscription

__all__ = (
    "DEFAULT_PING_INTERVAL",
    "DEFAULT_PING_TIMEOUT",
    "EventKind",
    "InvalidKeyError",
    "InvalidValueError",
    "Map",
    "MapClosedError",
    "MapStatistics",
    "MapValueError",
    "RMapError",
    "Subscription",
    "join",
)
