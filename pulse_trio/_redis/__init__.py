"""pulse-trio's own Redis transport (Trio and asyncio through AnyIO, hiredis parser).

See :mod:`._client` for the API. Layout: ``_resp`` (sans-I/O protocol core), ``_connection``
(socket drivers, one server's connections), ``_pubsub`` (subscriptions), ``_cluster`` (Redis
Cluster routing), ``_sentinel`` (finding the primary), ``_client`` (``open_client``, ``Client``).
"""

from .._errors import RedisUnavailableError as RedisUnavailableError
from ._client import Client as Client
from ._client import Script as Script
from ._client import open_client as open_client
from ._client import parse_url as parse_url
from ._connection import ConnectionLostError as ConnectionLostError
from ._connection import DirectConnection as DirectConnection
from ._connection import NodeStatistics as NodeStatistics
from ._pubsub import Resubscribed as Resubscribed
from ._pubsub import Subscription as Subscription
from ._resp import Message as Message
from ._resp import ProtocolError as ProtocolError
from ._resp import ResponseError as ResponseError

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
