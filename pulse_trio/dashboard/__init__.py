"""A read-only web dashboard of a live deployment (the ``dashboard`` extra).

:func:`create_app` builds the ASGI application that ``pulse-trio dashboard`` serves: pools
with their nodes, workers and jobs, streams with their sinks, maps with their content, read
with :mod:`pulse_trio.admin` (nothing is ever written to Redis). See
``docs/observability.md``.
"""

from ._app import History, create_app, sample_forever

__all__ = ("History", "create_app", "sample_forever")
