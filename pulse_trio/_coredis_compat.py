"""Work-around for a defect of coredis that pulse-trio cannot live with, kept to our clients.

Pool slots of lost connections (coredis 6.9). A coredis pool hands out at most
``max_connections`` connections, counted by tokens in a queue. A connection that dies while
it is idle in the queue gives its token back (coredis replaces it with ``None``), but one that
dies while it is leased (a subscription or a blocking ``XREAD`` whose socket was killed, or a
connection invalidated on purpose) is dropped by ``release()`` and its token is lost for good.
After ``max_connections`` such losses every later command waits forever for a connection.
pulse-trio replaces subscriptions and blocking reads after every fault, so this would hang
any long-lived process; tests/test_coredis_compat.py reproduces it.

The fix is confined to the clients pulse-trio touches; coredis itself is never changed:

- :func:`pulse_trio.connect` builds its clients on the pool subclasses below, whose
  ``release()`` gives the token of an unusable connection back.
- A client the user built is fixed on its own pool instance only, and only when that pool's
  ``release()`` is recognised as the defective code (:func:`fix_client_pool`); otherwise one
  log line says that it was left alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import textwrap
import types
from typing import Any

from coredis._concurrency import QueueFull
from coredis.pool import ClusterConnectionPool, ConnectionPool

_LOGGER = logging.getLogger("pulse_trio")
_CHECKED = "_pulse_trio_pool_checked"


def _basic_release(pool: Any, connection: Any) -> None:
    pool.statistics.connection_released(connection)
    if connection.usable:
        pool._available_connections.put_nowait(connection)
    else:
        with contextlib.suppress(QueueFull):
            pool._available_connections.append_nowait(None)


def _cluster_release(pool: Any, connection: Any) -> None:
    pool.statistics.connection_released(connection)
    queue = pool._node_pool(connection.location)
    with contextlib.suppress(QueueFull):  # as coredis itself tolerates it
        if connection.usable:
            queue.put_nowait(connection)
        else:
            queue.append_nowait(None)


class SlotSafeConnectionPool(ConnectionPool[Any]):
    """A coredis pool whose ``release()`` gives back the slot of a connection lost while leased."""

    def release(self, connection: Any) -> None:
        """Return ``connection`` to the pool, or its slot when it is no longer usable."""
        _basic_release(self, connection)


class SlotSafeClusterConnectionPool(ClusterConnectionPool):
    """The cluster twin of :class:`SlotSafeConnectionPool`."""

    def release(self, connection: Any) -> None:
        """Return ``connection`` to its node's pool, or its slot when it is no longer usable."""
        _cluster_release(self, connection)


def _fingerprint(function: Any) -> str | None:
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        return None
    normalised = "\n".join(line.strip() for line in source.splitlines() if line.strip())
    return hashlib.sha256(normalised.encode()).hexdigest()


#: SHA-256 of the source (lines stripped, blank lines dropped) of coredis 6.9's defective
#: ``ConnectionPool.release`` and ``ClusterConnectionPool.release``.
_KNOWN_DEFECTIVE = {
    "basic": "bfd72d26a014848d6cdcb12a7dc560a917f84d5f30df230f08f6b3246651ad37",
    "cluster": "3870246c5215b7e8912747643abeb26e9f66f8ebc0d7954c9cc1223d0b1f0c23",
}


def fix_client_pool(client: Any, logger: logging.Logger | None = None) -> bool:
    """Fix the pool of a client pulse-trio did not build, if it has the known defect.

    Only that pool instance is changed (an instance attribute shadows its ``release``); the
    class, and so every other coredis user in the process, is left alone. A pool whose code
    is not recognised is left alone too, with one log line. Checked once per pool.

    Returns:
        Whether the pool now gives back the slots of lost connections.
    """
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        return False
    if isinstance(pool, SlotSafeConnectionPool | SlotSafeClusterConnectionPool):
        return True
    if getattr(pool, _CHECKED, None) is not None:
        return bool(getattr(pool, _CHECKED))
    if isinstance(pool, ClusterConnectionPool):
        kind, replacement = "cluster", _cluster_release
    elif isinstance(pool, ConnectionPool):
        kind, replacement = "basic", _basic_release
    else:
        kind, replacement = "", None
    fixed = False
    if replacement is not None and _fingerprint(type(pool).release) == _KNOWN_DEFECTIVE[kind]:
        pool.release = types.MethodType(replacement, pool)
        fixed = True
    else:
        (logger or _LOGGER).warning(
            "pulse-trio: the pool of this coredis client (%s.%s) is not the code pulse-trio "
            "knows, so it was left as it is; with coredis 6.9's defect a connection lost while "
            "leased would never give its pool slot back (pulse_trio.connect avoids it)",
            type(pool).__module__,
            type(pool).__qualname__,
        )
    with contextlib.suppress(AttributeError):
        setattr(pool, _CHECKED, fixed)
    return fixed
