"""Event streams on Redis Streams: readers (own cursor) and sinks (shared cursor, acks).

Wire-compatible with goa.design/pulse: stream key ``pulse:stream:<name>``, entry fields ``n``
(event name), ``p`` (payload) and ``t`` (topic).

The modules build on each other one way: ``_event`` and ``_options`` (events, positions,
options, key names) at the bottom, ``_io`` (shared Redis calls) above them, ``_reader`` and
``_sink`` (with ``_sink_core``, ``_sink_stream`` and ``_sink_policy``) above those,
``_stream`` on top.
"""

from ._event import NEWEST as NEWEST
from ._event import OLDEST as OLDEST
from ._event import Event as Event
from ._event import InvalidEventError as InvalidEventError
from ._event import MalformedEntryError as MalformedEntryError
from ._event import Start as Start
from ._event import StartPosition as StartPosition
from ._event import StreamError as StreamError
from ._options import DEFAULT_ACK_GRACE_PERIOD as DEFAULT_ACK_GRACE_PERIOD
from ._options import DEFAULT_BLOCK as DEFAULT_BLOCK
from ._options import DEFAULT_BUFFER_SIZE as DEFAULT_BUFFER_SIZE
from ._options import DEFAULT_MAX_LEN as DEFAULT_MAX_LEN
from ._options import DEFAULT_MAX_POLLED as DEFAULT_MAX_POLLED
from ._reader import Reader as Reader
from ._reader import ReaderStatistics as ReaderStatistics
from ._sink import Sink as Sink
from ._sink import SinkStatistics as SinkStatistics
from ._stream import EventSpec as EventSpec
from ._stream import SinkInfo as SinkInfo
from ._stream import Stream as Stream
from ._stream import StreamInfo as StreamInfo

__all__ = (
    "DEFAULT_ACK_GRACE_PERIOD",
    "DEFAULT_BLOCK",
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_MAX_LEN",
    "DEFAULT_MAX_POLLED",
    "NEWEST",
    "OLDEST",
    "Event",
    "EventSpec",
    "InvalidEventError",
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
