"""OpenTelemetry metrics of pulse-trio (the ``otel`` extra), no-ops without it.

One concept: the counters the code bumps, and the instruments that export them. Hot paths
never call an OpenTelemetry instrument per event: they bump a plain ``int`` of a *cell* (one
object per attribute set: a stream, a (stream, sink) pair, a pool, a map, a server), and
observable instruments read the cells when a reader collects. Cells live as long as the
process (their number is the number of distinct names used), so a counter never goes down
when the object that bumped it closes. Gauges read the live objects, held weakly.

Only three histograms are recorded as they happen: the pool's dispatch latency (one record
per ``dispatch_job``, a call that already costs a round trip), a map's replica lag (one per
``Map.set``, likewise) and the transport's round-trip latency, sampled (one request in
:data:`LATENCY_SAMPLE_EVERY`).

Without ``opentelemetry-api`` (or with ``PULSE_TRIO_METRICS=0``) :data:`ENABLED` is false:
cells are still bumped (an ``int`` addition), nothing is registered, no gauge is refreshed
and no histogram exists. With the API and no SDK, the API's proxy instruments are created
once and never called (no reader ever collects). Every name and unit is documented in
``docs/observability.md``.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Histogram, Observation

try:
    from opentelemetry import metrics as _otel
except ImportError:  # pragma: no cover - the otel extra is in the dev dependencies
    _otel = None  # type: ignore[assignment]

#: Whether metrics are exported: the OpenTelemetry API is importable and the environment
#: variable ``PULSE_TRIO_METRICS`` is not ``0``, ``off``, ``false`` or ``no``.
_SWITCH = os.environ.get("PULSE_TRIO_METRICS", "1").strip().lower()
ENABLED: Final = _otel is not None and _SWITCH not in ("0", "off", "false", "no")
#: The instrumentation scope's name (``get_meter`` argument).
METER_NAME: Final = "pulse_trio"
#: Seconds between two refreshes of a sink's gauges (pending, lag, stream length): one
#: pipelined ``XINFO GROUPS`` + ``XLEN`` per stream of the sink instance.
GAUGE_INTERVAL: float = 15.0
#: The transport records the round trip of one request in this many (a power of two).
LATENCY_SAMPLE_EVERY: Final = 64

#: Values of the ``messaging.system`` attribute.
SYSTEM: Final = "pulse"

# --------------------------------------------------------------------------- cells


class StreamCell:
    """Counters of one stream (events added by this process)."""

    __slots__ = ("added", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.added = 0


class SinkCell:
    """Counters and last gauge readings of one (stream, sink) pair in this process."""

    __slots__ = (
        "acked",
        "dead_lettered",
        "delivered",
        "lag",
        "length",
        "pending",
        "redelivered",
        "sink",
        "stream",
    )

    def __init__(self, stream: str, sink: str) -> None:
        self.stream = stream
        self.sink = sink
        self.delivered = 0
        self.redelivered = 0
        self.acked = 0
        self.dead_lettered = 0
        #: Last readings of the gauges (``None`` until the first refresh).
        self.pending: int | None = None
        self.lag: int | None = None
        self.length: int | None = None


class PoolCell:
    """Counters of one pool in this process."""

    __slots__ = (
        "dispatched",
        "failed",
        "failovers",
        "moved",
        "name",
        "rebalances",
        "started",
        "stopped",
        "ticks",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.dispatched = 0
        self.started = 0
        self.stopped = 0
        self.failed = 0
        self.moved = 0
        self.rebalances = 0
        self.failovers = 0
        self.ticks = 0


class MapCell:
    """Counters of one map in this process."""

    __slots__ = ("name", "resyncs", "writes")

    def __init__(self, name: str) -> None:
        self.name = name
        self.writes = 0
        #: Snapshots loaded, per reason (``initial``, ``inconsistency``, ``reconnect``).
        self.resyncs: dict[str, int] = {}


class ServerCell:
    """Transport counters of one server, summed over the connections already replaced."""

    __slots__ = ("commands", "connects", "name", "writes")

    def __init__(self, name: str) -> None:
        self.name = name
        self.commands = 0
        self.writes = 0
        self.connects = 0


class _TransportNode(Protocol):
    """What the gauges read of a transport node (``pulse_trio._redis._node.Node``)."""

    name: str

    def live_counts(self) -> tuple[int, int, int, int, int]:
        """Commands, writes and connects not yet folded into the cell; used, idle."""


class _PoolNode(Protocol):
    """What the gauges read of a pool node."""

    def jobs_per_worker(self) -> dict[str, int]:
        """The number of jobs each of its workers runs now."""


_K = TypeVar("_K")
_C = TypeVar("_C")

_streams: dict[str, StreamCell] = {}
_sinks: dict[tuple[str, str], SinkCell] = {}
_pools: dict[str, PoolCell] = {}
_maps: dict[str, MapCell] = {}
_servers: dict[str, ServerCell] = {}
_transport_nodes: weakref.WeakSet[Any] = weakref.WeakSet()
_pool_nodes: dict[Any, str] = weakref.WeakKeyDictionary()  # type: ignore[assignment]


def _cell(table: dict[_K, _C], key: _K, make: Callable[[], _C]) -> _C:
    """The cell of ``key`` in ``table``, made (and the instruments set up) on first use."""
    cell = table.get(key)
    if cell is None:
        cell = table[key] = make()
        _setup()
    return cell


def stream_cell(name: str) -> StreamCell:
    """The cell of stream ``name`` (made on first use)."""
    return _cell(_streams, name, lambda: StreamCell(name))


def sink_cell(stream: str, sink: str) -> SinkCell:
    """The cell of the pair (``stream``, ``sink``)."""
    return _cell(_sinks, (stream, sink), lambda: SinkCell(stream, sink))


def pool_cell(name: str) -> PoolCell:
    """The cell of pool ``name``."""
    return _cell(_pools, name, lambda: PoolCell(name))


def map_cell(name: str) -> MapCell:
    """The cell of map ``name``."""
    return _cell(_maps, name, lambda: MapCell(name))


def server_cell(name: str) -> ServerCell:
    """The transport cell of server ``name``."""
    return _cell(_servers, name, lambda: ServerCell(name))


def track_transport_node(node: _TransportNode) -> None:
    """Read ``node``'s live counters at collection time while it exists (held weakly)."""
    if ENABLED:
        _transport_nodes.add(node)


def track_pool_node(node: _PoolNode, pool: str) -> None:
    """Export the jobs per worker of ``node`` while it exists (held weakly)."""
    if ENABLED:
        _pool_nodes[node] = pool


# --------------------------------------------------------------------------- histograms

#: The pool's dispatch latency (seconds), or ``None`` when metrics are off.
dispatch_duration: Histogram | None = None
#: The transport's sampled round-trip latency (seconds), or ``None`` when metrics are off.
client_duration: Histogram | None = None
#: From a ``Map.set`` call to the local replica reflecting it (seconds), or ``None``.
replica_lag: Histogram | None = None
#: Writes of this process whose application is awaited, per replica, at most (beyond, the
#: replica is not applying: the marks are dropped).
MAX_LAG_MARKS: Final = 1000

_set_up = False


def _setup() -> None:
    """Create the instruments once, on the first cell (no-op when metrics are off)."""
    global _set_up, dispatch_duration, client_duration, replica_lag
    if _set_up or not ENABLED:
        return
    _set_up = True
    meter = _otel.get_meter(METER_NAME)
    for name, unit, description, callback in _OBSERVABLE_COUNTERS:
        meter.create_observable_counter(name, [callback], unit=unit, description=description)
    for name, unit, description, callback in _GAUGES:
        meter.create_observable_gauge(name, [callback], unit=unit, description=description)
    dispatch_duration = meter.create_histogram(
        "pulse_trio.pool.dispatch.duration",
        unit="s",
        description="Time dispatch_job took, from the call to the job's admission.",
    )
    replica_lag = meter.create_histogram(
        "pulse_trio.map.replica.lag",
        unit="s",
        description="From a Map.set call to the local replica reflecting its revision.",
    )
    client_duration = meter.create_histogram(
        "db.client.operation.duration",
        unit="s",
        description=(
            f"Round trip of a request on a multiplexed connection (one in "
            f"{LATENCY_SAMPLE_EVERY} is recorded)."
        ),
    )


# --------------------------------------------------------------------------- callbacks


def _observation(value: int | float, attributes: dict[str, str]) -> Observation:
    assert _otel is not None
    return _otel.Observation(value, attributes)


def _sink_attributes(cell: SinkCell) -> dict[str, str]:
    return {
        "messaging.system": SYSTEM,
        "messaging.destination.name": cell.stream,
        "messaging.consumer.group.name": cell.sink,
    }


def _sink_counter(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(_options: CallbackOptions) -> Iterator[Observation]:
        for cell in list(_sinks.values()):
            yield _observation(getattr(cell, field), _sink_attributes(cell))

    return callback


def _pool_counter(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(_options: CallbackOptions) -> Iterator[Observation]:
        for cell in list(_pools.values()):
            yield _observation(getattr(cell, field), {"pulse_trio.pool.name": cell.name})

    return callback


def _added(_options: CallbackOptions) -> Iterator[Observation]:
    for cell in list(_streams.values()):
        yield _observation(
            cell.added,
            {
                "messaging.system": SYSTEM,
                "messaging.destination.name": cell.name,
                "messaging.operation.name": "add",
            },
        )


def _map_writes(_options: CallbackOptions) -> Iterator[Observation]:
    for cell in list(_maps.values()):
        yield _observation(cell.writes, {"pulse_trio.map.name": cell.name})


def _map_resyncs(_options: CallbackOptions) -> Iterator[Observation]:
    for cell in list(_maps.values()):
        for reason, count in list(cell.resyncs.items()):
            yield _observation(
                count, {"pulse_trio.map.name": cell.name, "pulse_trio.resync.reason": reason}
            )


def _transport_totals() -> dict[str, tuple[int, int, int, int, int]]:
    """Per server: commands, writes, connects (cells plus live nodes), used, idle."""
    totals = {
        name: [cell.commands, cell.writes, cell.connects, 0, 0] for name, cell in _servers.items()
    }
    for node in list(_transport_nodes):
        row = totals.setdefault(node.name, [0, 0, 0, 0, 0])
        for i, value in enumerate(node.live_counts()):
            row[i] += value
    return {name: (row[0], row[1], row[2], row[3], row[4]) for name, row in totals.items()}


def _server_attributes(name: str) -> dict[str, str]:
    return {"db.system.name": "redis", "server.address": name}


def _commands(_options: CallbackOptions) -> Iterator[Observation]:
    for name, row in _transport_totals().items():
        yield _observation(row[0], _server_attributes(name))


def _writes(_options: CallbackOptions) -> Iterator[Observation]:
    for name, row in _transport_totals().items():
        yield _observation(row[1], _server_attributes(name))


def _reconnects(_options: CallbackOptions) -> Iterator[Observation]:
    for name, row in _transport_totals().items():
        yield _observation(max(0, row[2] - 1), _server_attributes(name))


def _batch_size(_options: CallbackOptions) -> Iterator[Observation]:
    for name, row in _transport_totals().items():
        if row[1]:
            yield _observation(row[0] / row[1], _server_attributes(name))


def _connections(_options: CallbackOptions) -> Iterator[Observation]:
    for name, row in _transport_totals().items():
        for state, value in (("used", row[3]), ("idle", row[4])):
            yield _observation(
                value,
                {"db.client.connection.pool.name": name, "db.client.connection.state": state},
            )


def _sink_gauge(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(_options: CallbackOptions) -> Iterator[Observation]:
        for cell in list(_sinks.values()):
            value = getattr(cell, field)
            if value is not None:
                yield _observation(value, _sink_attributes(cell))

    return callback


def _stream_length(_options: CallbackOptions) -> Iterator[Observation]:
    lengths: dict[str, int] = {}
    for cell in list(_sinks.values()):
        if cell.length is not None:
            lengths[cell.stream] = cell.length
    for stream, length in lengths.items():
        yield _observation(
            length, {"messaging.system": SYSTEM, "messaging.destination.name": stream}
        )


def _jobs_per_worker(_options: CallbackOptions) -> Iterator[Observation]:
    for node, pool in list(_pool_nodes.items()):
        for worker, jobs in node.jobs_per_worker().items():
            yield _observation(jobs, {"pulse_trio.pool.name": pool, "pulse_trio.worker.id": worker})


_Callback = Callable[["CallbackOptions"], Iterable["Observation"]]

#: Observable counters: (name, unit, description, callback).
_OBSERVABLE_COUNTERS: Final[tuple[tuple[str, str, str, _Callback], ...]] = (
    ("messaging.client.sent.messages", "{message}", "Events added to a stream.", _added),
    (
        "messaging.client.consumed.messages",
        "{message}",
        "Events a sink delivered (redeliveries included).",
        _sink_counter("delivered"),
    ),
    (
        "pulse_trio.sink.redelivered",
        "{message}",
        "Of the delivered events, those claimed from another consumer (deliveries > 1).",
        _sink_counter("redelivered"),
    ),
    (
        "pulse_trio.sink.acknowledged",
        "{message}",
        "Events acknowledged (as Redis counted them).",
        _sink_counter("acked"),
    ),
    (
        "pulse_trio.sink.dead_lettered",
        "{message}",
        "Events moved to the dead-letter stream (or dropped) after max_deliveries.",
        _sink_counter("dead_lettered"),
    ),
    (
        "pulse_trio.pool.jobs.dispatched",
        "{job}",
        "Jobs admitted by dispatch_job.",
        _pool_counter("dispatched"),
    ),
    (
        "pulse_trio.pool.jobs.started",
        "{job}",
        "Job starts that succeeded on a worker.",
        _pool_counter("started"),
    ),
    (
        "pulse_trio.pool.jobs.stopped",
        "{job}",
        "Jobs stopped on a worker by stop_job.",
        _pool_counter("stopped"),
    ),
    (
        "pulse_trio.pool.jobs.failed",
        "{job}",
        "Job starts that raised on a worker.",
        _pool_counter("failed"),
    ),
    (
        "pulse_trio.pool.jobs.moved",
        "{job}",
        "Jobs a worker stopped because routing gave them to another worker.",
        _pool_counter("moved"),
    ),
    (
        "pulse_trio.pool.rebalances",
        "{rebalance}",
        "Membership changes after which a node moved at least one job.",
        _pool_counter("rebalances"),
    ),
    (
        "pulse_trio.pool.failovers",
        "{failover}",
        "Times a node lost its lease: it stopped its jobs and the pool gave them to others.",
        _pool_counter("failovers"),
    ),
    ("pulse_trio.pool.ticks", "{tick}", "Ticks a ticker delivered.", _pool_counter("ticks")),
    ("pulse_trio.map.writes", "{write}", "Writes to a map (one Lua script each).", _map_writes),
    (
        "pulse_trio.map.resyncs",
        "{resync}",
        "Snapshots a replica loaded, by reason.",
        _map_resyncs,
    ),
    (
        "pulse_trio.client.commands",
        "{command}",
        "Requests sent on multiplexed connections.",
        _commands,
    ),
    (
        "pulse_trio.client.writes",
        "{write}",
        "Socket writes that carried them (commands / writes: the pipelining).",
        _writes,
    ),
    (
        "pulse_trio.client.reconnects",
        "{connection}",
        "Multiplexed connections opened again after a loss.",
        _reconnects,
    ),
)

#: Observable gauges: (name, unit, description, callback).
_GAUGES: Final[tuple[tuple[str, str, str, _Callback], ...]] = (
    (
        "pulse_trio.sink.pending",
        "{message}",
        "Events delivered to the sink and not acknowledged (XINFO GROUPS).",
        _sink_gauge("pending"),
    ),
    (
        "pulse_trio.sink.lag",
        "{message}",
        "Events of the stream not delivered to the sink yet (XINFO GROUPS).",
        _sink_gauge("lag"),
    ),
    ("pulse_trio.stream.length", "{message}", "Entries in the stream (XLEN).", _stream_length),
    ("pulse_trio.pool.worker.jobs", "{job}", "Jobs a worker runs now.", _jobs_per_worker),
    (
        "pulse_trio.client.batch_size",
        "{command}",
        "Mean commands per socket write since the process started (pipelining).",
        _batch_size,
    ),
    (
        "db.client.connection.count",
        "{connection}",
        "Direct (blocking) connections of a server: used (lent) and idle.",
        _connections,
    ),
)
