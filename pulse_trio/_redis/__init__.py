"""pulse-trio's own Redis transport (Trio and asyncio through AnyIO, hiredis parser).

See :mod:`._client` for the API. Layout, bottom up: ``_resp`` (sans-I/O RESP core),
``_settings`` (addresses, settings, backoff), ``_requests`` (sans-I/O request/reply
bookkeeping: which reply is whose, what may be retried), ``_direct`` (handshakes, the direct
connection), ``_fast_io`` (the fast path's socket access), ``_multiplexed`` (the shared,
auto-pipelined connection), ``_node`` (one server's connections), ``_pubsub``
(subscriptions), ``_url`` (URL parsing), ``_cluster`` (Redis Cluster routing), ``_sentinel``
(finding the primary), ``_client`` (``open_client``, ``Client``).
"""

from .._errors import RedisUnavailableError as RedisUnavailableError
from ._client import Client as Client
from ._client import Script as Script
from ._client import open_client as open_client
from ._direct import DirectConnection as DirectConnection
from ._node import NodeStatistics as NodeStatistics
from ._pubsub import Resubscribed as Resubscribed
from ._pubsub import Subscription as Subscription
from ._requests import ConnectionLostError as ConnectionLostError
from ._resp import Message as Message
from ._resp import ProtocolError as ProtocolError
from ._resp import ResponseError as ResponseError
from ._url import parse_url as parse_url

__all__ = (
    "Client",
    "ConnectionLostError",
    "DirectConnection",
    "Message",
    "NodeStatistics",
    "ProtocolError",
    "RedisUnavailableError",
    "ResponseError",
    "Resubscribed",
    "Script",
    "Subscription",
    "open_client",
    "parse_url",
)
