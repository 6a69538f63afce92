"""What the streams of one sink instance share: :class:`SinkCore`, and the sink's timeouts.

A sink instance reads each of its streams with a :class:`~._sink_stream.StreamConsumer`; the
consumers share one core: the instance's consumer name, options, buffer, counters, keep-alive
map and scripts. Built by the sink (:mod:`._sink`); no I/O until used.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Final, cast

import anyio
import attrs

from .. import _metrics
from .._boundary import Client, is_cluster, map_redis_errors
from .._lua import BoundScript
from ..rmap._ops import MapOps
from ._buffer import EventBuffer
from ._event import id_key
from ._options import SinkOptions

#: Longest time the cleanup on leaving (consumer deletion, membership) may take, in seconds.
CLEANUP_TIMEOUT: Final = 5.0
#: Longest pause between two attempts to recreate a lost group, in seconds.
MAX_RETRY_DELAY: Final = 5.0
#: Longest time a short background command (keep-alive, lease, claim, ack of skipped entries)
#: may delay leaving the block, in seconds; it then fails as a transient error.
COMMAND_TIMEOUT: Final = 2.0


def uninterrupted() -> AbstractContextManager[anyio.CancelScope]:
    """A scope in which short background commands finish even if the sink is being left.

    A cancelled command may still run on the server (the caller only stops waiting for its
    reply), so quick non-blocking commands whose effect the leaving sink must know (keep-alive,
    membership, lease, claims, acks) are shielded from cancellation, with a deadline. The
    blocking XREADGROUP is never shielded.
    """
    return anyio.fail_after(COMMAND_TIMEOUT, shield=True)


def later_id(a: str, b: str) -> str:
    """The later of two stream ids."""
    return a if id_key(a) >= id_key(b) else b


@attrs.define(eq=False)
class SinkCore:
    """What one sink instance's streams share. Built by the sink; no I/O until used."""

    client: Client
    name: str
    consumer: str
    options: SinkOptions
    logger: logging.Logger
    keepalive: MapOps
    #: The events read and not taken yet, made when the sink is entered (a sink never
    #: entered holds none).
    buffer: EventBuffer = attrs.field(init=False)
    scripts: Mapping[str, BoundScript]
    #: (stream, id) of the events waiting in the buffer: a reclaim round that claims one of
    #: them back (this instance is slow) does not queue it a second time.
    in_buffer: set[tuple[str, str]] = attrs.field(factory=set)
    counts: Counter[str] = attrs.field(factory=Counter)
    #: The metrics cells of this sink, per stream name (see :meth:`cell`).
    cells: dict[str, _metrics.SinkCell] = attrs.field(factory=dict)
    #: Set when a stream was left with this consumer still in its group (entries pending, or
    #: cleanup failed): the keep-alive then stays, so others judge the consumer by its age.
    consumer_kept: bool = False

    def cell(self, stream: str) -> _metrics.SinkCell:
        """The metrics cell of (``stream``, this sink)."""
        cell = self.cells.get(stream)
        if cell is None:
            cell = self.cells[stream] = _metrics.sink_cell(stream, self.name)
        return cell

    @property
    def cluster(self) -> bool:
        """Whether the client is a cluster client (keys of two streams may be on two nodes)."""
        return is_cluster(self.client)

    def extra(self, stream: str | None = None, **more: Any) -> dict[str, Any]:
        """The ``extra`` of a log record about this instance (and ``stream``)."""
        extra: dict[str, Any] = {"sink": self.name, "consumer": self.consumer}
        if stream is not None:
            extra["stream"] = stream
        extra.update(more)
        return extra

    def free_buffer(self) -> int:
        """How many more events the buffer takes before it is full."""
        return self.buffer.free

    async def redis_time_ns(self) -> int:
        """The Redis server's clock in Unix nanoseconds (one clock for every instance)."""
        with map_redis_errors(f"sink {self.name!r}: reading the Redis clock"):
            seconds, micros = cast(list[Any], await self.client.execute("TIME"))
        return int(seconds) * 1_000_000_000 + int(micros) * 1000

    async def write_keepalive(self) -> None:
        """Write this instance's keep-alive (the Redis clock, as goa.design/pulse does)."""
        await self.keepalive.set(self.consumer, str(await self.redis_time_ns()))
