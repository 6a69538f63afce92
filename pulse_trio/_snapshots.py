"""The snapshot types of :mod:`pulse_trio.admin`: frozen values, no I/O.

What :mod:`pulse_trio.admin`'s readers (``_admin.py``) return: one frozen attrs class per
object of a deployment (pool, node, worker, job, stream, sink, consumer, map) and the
:class:`Snapshot` of all of them. :func:`pulse_trio.admin.to_json` turns them into the
documented JSON shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import attrs


@attrs.frozen
class NodeSnapshot:
    """One node of a pulse-trio pool.

    Attributes:
        id: The node's id.
        lease_left: pulse-trio pools: seconds until the pool declares the node dead unless
            it renews its lease (it heartbeats every ``worker_ttl / 5``, so a healthy node
            shows between 0.8 and 1.0 times ``worker_ttl``); negative when overdue (it is about
            to be reaped). ``None`` for goa.design/pulse pools.
        heartbeat_age: Seconds since the node's last heartbeat (pulse-trio pools: it beats
            every ``worker_ttl / 5``; goa.design/pulse pools: its keep-alive). ``None`` when
            the pool does not record it (a pulse-trio pool written by an older version).
        workers: The ids of its workers (pulse-trio pools; goa.design/pulse does not
            record which node runs a worker).
    """

    id: str
    lease_left: float | None
    heartbeat_age: float | None
    workers: tuple[str, ...]


@attrs.frozen
class WorkerSnapshot:
    """One worker of a pool.

    Attributes:
        id: The worker's id.
        node_id: The node that runs it (``None`` for goa.design/pulse pools, which do not
            record it).
        heartbeat_age: Seconds since its last heartbeat (pulse-trio workers beat with their
            node; goa.design/pulse workers record their own). ``None`` when not recorded.
        lease_left: Seconds left on its node's lease (pulse-trio), else ``None``.
        jobs: The keys of the jobs assigned to it.
    """

    id: str
    node_id: str | None
    heartbeat_age: float | None
    lease_left: float | None
    jobs: tuple[str, ...]


@attrs.frozen
class JobSnapshot:
    """One job of a pulse-trio pool.

    Attributes:
        key: The job key.
        state: ``pending``, ``starting``, ``running``, ``stopping``, ``unassigned``,
            ``retry`` or ``failed`` (see ``docs/pool-protocol.md``, "A job's states").
        worker_id: The worker it is assigned to, or ``None``.
        failures: Failed starts since it last ran.
        error: The last start error, or ``""``.
        created_at: When it was admitted (UTC, Redis's clock).
    """

    key: str
    state: str
    worker_id: str | None
    failures: int
    error: str
    created_at: datetime


@attrs.frozen
class PoolSnapshot:
    """A worker pool.

    Attributes:
        name: The pool's name.
        layout: ``"pulse-trio"`` (pulse-trio's own protocol) or ``"goa"`` (a
            goa.design/pulse pool: nodes, workers, their heartbeats and jobs are read from
            its replicated maps).
        nodes: The live (not yet reaped) nodes, sorted by id.
        workers: The workers, sorted by id.
        jobs: Every job, sorted by key (goa pools: one per key found in its jobs map,
            state ``running``).
        queued: Jobs admitted and not running yet (waiting for a worker, a retry or a
            start).
        failed: Keys of the jobs that failed too often (stop them to remove them).
        tickers: Names of the pool's tickers.
        shutting_down: Whether a pool-wide shutdown is in progress.
    """

    name: str
    layout: str
    nodes: tuple[NodeSnapshot, ...]
    workers: tuple[WorkerSnapshot, ...]
    jobs: tuple[JobSnapshot, ...]
    queued: int
    failed: tuple[str, ...]
    tickers: tuple[str, ...]
    shutting_down: bool


@attrs.frozen
class ConsumerSnapshot:
    """One consumer (sink instance) of a sink.

    Attributes:
        name: The consumer's name.
        pending: Entries delivered to it and not acknowledged.
        idle: Seconds since it last read or claimed entries.
    """

    name: str
    pending: int
    idle: float


@attrs.frozen
class SinkSnapshot:
    """One sink of a stream (a consumer group).

    Attributes:
        name: The sink's name.
        consumers: Its consumers, sorted by name.
        pending: Entries delivered and not acknowledged yet.
        lag: Entries not delivered yet; ``None`` when Redis cannot tell (entries were
            deleted in the middle of the stream).
        last_delivered_id: The id of the last entry delivered.
        idle: Seconds since any consumer read (the smallest consumer idle time), ``None``
            without consumers.
        dead_letters: Entries of this stream this sink moved to a dead-letter stream
            (counted in every dead-letter stream found, up to
            :data:`MAX_DEAD_LETTERS_READ` entries each).
    """

    name: str
    consumers: tuple[ConsumerSnapshot, ...]
    pending: int
    lag: int | None
    last_delivered_id: str
    idle: float | None
    dead_letters: int


@attrs.frozen
class StreamSnapshot:
    """One stream.

    Attributes:
        name: The stream's name (its key without ``pulse:stream:``).
        length: Entries in the stream.
        first_id: Id of the oldest entry, ``None`` when empty.
        last_id: Id of the newest entry, ``None`` when empty.
        sinks: Its sinks, sorted by name.
        dead_letter: Whether its entries are dead letters of a sink.
    """

    name: str
    length: int
    first_id: str | None
    last_id: str | None
    sinks: tuple[SinkSnapshot, ...]
    dead_letter: bool


@attrs.frozen
class MapSnapshot:
    """One replicated map.

    Attributes:
        name: The map's name (its key without ``map:`` and ``:content``).
        revision: Its revision (the ``=rev`` field), 0 when it has none.
        values: Its content (reserved ``=`` fields left out), sorted by key.
    """

    name: str
    revision: int
    values: Mapping[str, str]

    @property
    def size(self) -> int:
        """The number of keys."""
        return len(self.values)


@attrs.frozen
class Snapshot:
    """Everything :func:`snapshot` found.

    Attributes:
        taken_at: When the snapshot was taken (UTC, Redis's clock).
        pools: See :func:`pools`.
        streams: See :func:`streams`.
        maps: See :func:`maps`.
    """

    taken_at: datetime
    pools: tuple[PoolSnapshot, ...]
    streams: tuple[StreamSnapshot, ...]
    maps: tuple[MapSnapshot, ...]


# --------------------------------------------------------------------------- entry points
