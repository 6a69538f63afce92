"""Work-arounds for defects of coredis that pulse-trio cannot live with.

Pool slots of lost connections (coredis 6.x). A coredis pool hands out at most
``max_connections`` connections, counted by tokens in a queue. A connection that dies while
it is idle in the queue gives its token back (coredis replaces it with ``None``), but one that
dies while it is leased (a subscription or a blocking ``XREAD`` whose socket was killed, or a
connection invalidated on purpose) is dropped by ``release()`` and its token is lost for good.
After ``max_connections`` such losses every later command waits forever for a connection.
pulse-trio replaces subscriptions and blocking reads after every fault, so this would hang
any long-lived process; tests/test_coredis_compat.py reproduces it. The patch makes
``release()`` of an unusable connection give its token back.
"""

from __future__ import annotations

import contextlib
from typing import Any

from coredis._concurrency import QueueFull
from coredis.pool import ClusterConnectionPool, ConnectionPool

_MARK = "_pulse_trio_releases_lost_slots"


def _patched_basic_release(self: Any, connection: Any) -> None:
    self.statistics.connection_released(connection)
    if connection.usable:
        self._available_connections.put_nowait(connection)
    else:
        with contextlib.suppress(QueueFull):
            self._available_connections.append_nowait(None)


def _patched_cluster_release(self: Any, connection: Any) -> None:
    self.statistics.connection_released(connection)
    queue = self._node_pool(connection.location)
    try:
        if connection.usable:
            queue.put_nowait(connection)
        else:
            queue.append_nowait(None)
    except QueueFull:  # pragma: no cover - as coredis itself tolerates it
        pass


def apply() -> None:
    """Install the work-arounds (idempotent)."""
    if getattr(ConnectionPool, _MARK, False):
        return
    ConnectionPool.release = _patched_basic_release  # type: ignore[method-assign]
    ClusterConnectionPool.release = _patched_cluster_release  # type: ignore[method-assign]
    setattr(ConnectionPool, _MARK, True)
