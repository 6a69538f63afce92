"""Event streams on Redis Streams: readers (own cursor) and sinks (shared cursor, acks).

Wire-compatible with goa.design/pulse: stream key ``pulse:stream:<name>``, entry fields ``n``
(event name), ``p`` (payload) and ``t`` (topic).
"""

from ._event import NEWEST as NEWEST
from ._event import OLDEST as OLDEST
from ._event import Event as Event
from ._event import MalformedEntryError as MalformedEntryError
from ._event import Start as Start
from ._event import StartPosition as StartPosition
from ._event import StreamError as StreamError
from ._reader import Reader as Reader
from ._reader import ReaderStatistics as ReaderStatistics
from ._sink import Sink as Sink
from ._sink import SinkStatistics as SinkStatistics
from ._stream import EventSpec as EventSpec
from ._stream import SinkInfo as SinkInfo
from ._stream import Stream as Stream
from ._stream import StreamInfo as StreamInfo

__all__ = (
    "NEWEST",
    "OLDEST",
    "Event",
    "EventSpec",
    "MalformedEntryError",
    "Reader",
    "ReaderStatistics",
    "Sink",
    "SinkInfo",
    "SinkStatistics",
    "Start",
    "StartPosition",
    "Stream",
    "StreamError",
    "StreamInfo",
)
