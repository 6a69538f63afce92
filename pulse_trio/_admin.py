"""The implementation of :mod:`pulse_trio.admin` (see its docstring)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal

import attrs

from ._boundary import Client, as_dict, check_client, is_no_such_key, map_redis_errors, text

#: Version of the JSON shape written by :func:`to_json` (bumped on incompatible changes).
JSON_VERSION: Final = 1
#: Most entries of one dead-letter stream read to count them per sink.
MAX_DEAD_LETTERS_READ: Final = 10_000

_POOL_PREFIX = "pulse-trio:pool:"
_POOL_SUFFIXES = (
    "jobs|payloads|nodes|workers|epoch|unassigned|retry|queued|seq|shutdown|shutdown-acks|"
    "tickers|scheduled|node:[^:]*"
)
_POOL_KEY = re.compile(r"pulse-trio:pool:\{(.+)\}:(?:" + _POOL_SUFFIXES + r")")
_GO_POOL_KEY = re.compile(r"map:(.+):worker-keepalive:content")
_STREAM_PREFIX = "pulse:stream:"
_MAP_KEY = re.compile(r"map:(.+):content")

Kind = Literal["pools", "streams", "maps"]


# --------------------------------------------------------------------------- snapshots


@attrs.frozen
class NodeSnapshot:
    """One node of a pulse-trio pool.

    Attributes:
        id: The node's id.
        lease_left: pulse-trio pools: seconds until the pool declares the node dead unless
            it renews its lease (it heartbeats every ``worker_ttl / 5``, so a healthy node
            shows between 0.8 and 1.0 times ``worker_ttl``); negative when overdue (it is about
            to be reaped). ``None`` for goa.design/pulse pools.
        heartbeat_age: goa.design/pulse pools: seconds since the node's last keep-alive.
            ``None`` for pulse-trio pools, which record the lease's end, not the beat.
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
        heartbeat_age: Seconds since its last heartbeat. pulse-trio workers beat with their
            node, and the pool records the lease's end rather than the beat:
            ``None`` there, see :attr:`lease_left`. goa.design/pulse workers record it.
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


async def pools(client: Client, name: str | None = None) -> tuple[PoolSnapshot, ...]:
    """The pools of the deployment (pulse-trio's and goa.design/pulse's), sorted by name.

    Args:
        client: An open :class:`pulse_trio.Client` (never closed here).
        name: Only the pool(s) of this name (no scan); ``None`` for all.

    Returns:
        One :class:`PoolSnapshot` per pool found (none when ``name`` names no pool).

    Raises:
        pulse_trio.RedisUnavailableError: Redis could not be reached.
        pulse_trio.RedisCommandError: Redis refused a read (an ACL denial, for example).
    """
    check_client(client)
    now = await _now_ms(client)
    with map_redis_errors("inspecting pools"):
        if name is None:
            ours = {
                m.group(1)
                for key in await client.scan_keys(_POOL_PREFIX + "*")
                if (m := _POOL_KEY.fullmatch(text(key)))
            }
            go = {
                m.group(1)
                for key in await client.scan_keys("map:*:worker-keepalive:content")
                if (m := _GO_POOL_KEY.fullmatch(text(key)))
            }
        else:
            ours, go = {name}, {name}
        found = [p for n in sorted(ours) if (p := await _pool(client, n, now)) is not None]
        found += [p for n in sorted(go) if (p := await _go_pool(client, n, now)) is not None]
    return tuple(sorted(found, key=lambda p: (p.name, p.layout)))


async def streams(client: Client, name: str | None = None) -> tuple[StreamSnapshot, ...]:
    """The streams of the deployment and their sinks, sorted by name.

    Args:
        client: An open :class:`pulse_trio.Client` (never closed here).
        name: Only this stream (no scan); ``None`` for all.

    Returns:
        One :class:`StreamSnapshot` per stream (none when ``name`` names no stream).
        Dead-letter counts are found in the streams read: with ``name``, only dead-letter
        entries in that stream itself would be counted, so every stream is scanned for
        them (cheap: one ``XRANGE ... COUNT 1`` per stream).

    Raises:
        pulse_trio.RedisUnavailableError: Redis could not be reached.
        pulse_trio.RedisCommandError: Redis refused a read (an ACL denial, for example).
    """
    check_client(client)
    with map_redis_errors("inspecting streams"):
        keys = [text(k) for k in await client.scan_keys(_STREAM_PREFIX + "*", type="stream")]
        dead = await _dead_letter_counts(client, keys)
        wanted = keys if name is None else [_STREAM_PREFIX + name]
        found = []
        for key in wanted:
            stream = await _stream(client, key, dead)
            if stream is not None:
                found.append(stream)
    return tuple(found)


async def maps(client: Client, name: str | None = None) -> tuple[MapSnapshot, ...]:
    """The replicated maps of the deployment with their content, sorted by name.

    Args:
        client: An open :class:`pulse_trio.Client` (never closed here).
        name: Only this map (no scan); ``None`` for all.

    Returns:
        One :class:`MapSnapshot` per map (none when ``name`` names no map). goa.design/pulse
        pools keep their state in maps too; they are listed here as well.

    Raises:
        pulse_trio.RedisUnavailableError: Redis could not be reached.
        pulse_trio.RedisCommandError: Redis refused a read (an ACL denial, for example).
    """
    check_client(client)
    with map_redis_errors("inspecting maps"):
        if name is None:
            keys = [text(k) for k in await client.scan_keys("map:*:content", type="hash")]
        else:
            keys = [f"map:{name}:content"]
        found = []
        for key in keys:
            match = _MAP_KEY.fullmatch(key)
            if match is None:
                continue
            fields = await _hash(client, key)
            if fields is None:
                continue
            values = {k: v for k, v in sorted(fields.items()) if not k.startswith("=")}
            revision = _int(fields.get("=rev"))
            found.append(MapSnapshot(match.group(1), revision, values))
    return tuple(found)


async def snapshot(
    client: Client, kinds: Sequence[Kind] = ("pools", "streams", "maps")
) -> Snapshot:
    """Pools, streams and maps at once.

    Args:
        client: An open :class:`pulse_trio.Client` (never closed here).
        kinds: Which of ``"pools"``, ``"streams"``, ``"maps"`` to read (the others are
            left empty).

    Raises:
        pulse_trio.RedisUnavailableError: Redis could not be reached.
        pulse_trio.RedisCommandError: Redis refused a read (an ACL denial, for example).
    """
    check_client(client)
    taken_at = datetime.fromtimestamp(await _now_ms(client) / 1000, tz=UTC)
    return Snapshot(
        taken_at=taken_at,
        pools=await pools(client) if "pools" in kinds else (),
        streams=await streams(client) if "streams" in kinds else (),
        maps=await maps(client) if "maps" in kinds else (),
    )


def to_json(value: Any) -> Any:
    """A snapshot (or a sequence of snapshots) as plain JSON-ready data.

    Snapshots become dicts keyed by their attribute names (a :class:`MapSnapshot` also gets
    its ``size``, a :class:`Snapshot` the ``version`` of the shape), tuples lists, mappings
    dicts, datetimes ISO 8601 strings with their time zone. This is the shape
    ``pulse-trio inspect --json`` prints (``docs/cli.md`` documents it).
    """
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [to_json(item) for item in value]
    if not attrs.has(type(value)):
        return value
    data: dict[str, Any] = {}
    if isinstance(value, Snapshot):
        data["version"] = JSON_VERSION
    for field in attrs.fields(type(value)):
        data[field.name] = to_json(getattr(value, field.name))
    if isinstance(value, MapSnapshot):
        data["size"] = value.size
    return data


# --------------------------------------------------------------------------- readers


async def _now_ms(client: Client) -> int:
    with map_redis_errors("reading the server's clock"):
        seconds, micros = await client.execute("TIME")
    return int(seconds) * 1000 + int(micros) // 1000


def _int(raw: str | None) -> int:
    try:
        return int(raw or 0)
    except ValueError:
        return 0


async def _hash(client: Client, key: str) -> dict[str, str] | None:
    """HGETALL as text, ``None`` when the key is missing or is not a hash."""
    kind = text(await client.execute("TYPE", key))
    if kind != "hash":
        return None
    return {text(k): text(v) for k, v in as_dict(await client.execute("HGETALL", key)).items()}


async def _pool(client: Client, name: str, now: int) -> PoolSnapshot | None:
    prefix = f"{_POOL_PREFIX}{{{name}}}:"
    replies = await client.execute_many(
        [
            ("ZRANGE", prefix + "nodes", 0, -1, "WITHSCORES"),
            ("HGETALL", prefix + "workers"),
            ("HGETALL", prefix + "jobs"),
            ("SCARD", prefix + "queued"),
            ("HKEYS", prefix + "tickers"),
            ("EXISTS", prefix + "shutdown"),
            ("EXISTS", prefix + "epoch"),
        ]
    )
    raw_nodes, raw_workers, raw_jobs, queued, tickers, shutdown, epoch = replies
    if not (raw_nodes or raw_workers or raw_jobs or queued or tickers or shutdown or epoch):
        return None
    deadlines = _scores(raw_nodes)
    worker_nodes = {text(w): text(n) for w, n in as_dict(raw_workers).items()}
    jobs: list[JobSnapshot] = []
    for key, raw in sorted(as_dict(raw_jobs).items()):
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        jobs.append(
            JobSnapshot(
                key=text(key),
                state=str(data.get("s", "")),
                worker_id=str(data.get("w") or "") or None,
                failures=int(data.get("f") or 0),
                error=str(data.get("e") or ""),
                created_at=datetime.fromtimestamp(int(data.get("c") or 0) / 1000, tz=UTC),
            )
        )
    per_worker: dict[str, list[str]] = {}
    for job in jobs:
        if job.worker_id is not None:
            per_worker.setdefault(job.worker_id, []).append(job.key)
    nodes = tuple(
        NodeSnapshot(
            id=node,
            lease_left=(deadline - now) / 1000,
            heartbeat_age=None,
            workers=tuple(sorted(w for w, n in worker_nodes.items() if n == node)),
        )
        for node, deadline in sorted(deadlines.items())
    )
    workers = tuple(
        WorkerSnapshot(
            id=worker,
            node_id=node,
            heartbeat_age=None,
            lease_left=(deadlines[node] - now) / 1000 if node in deadlines else None,
            jobs=tuple(per_worker.get(worker, ())),
        )
        for worker, node in sorted(worker_nodes.items())
    )
    return PoolSnapshot(
        name=name,
        layout="pulse-trio",
        nodes=nodes,
        workers=workers,
        jobs=tuple(jobs),
        queued=int(queued or 0),
        failed=tuple(j.key for j in jobs if j.state == "failed"),
        tickers=tuple(sorted(text(t) for t in tickers or ())),
        shutting_down=bool(shutdown),
    )


def _scores(reply: Any) -> dict[str, int]:
    """``ZRANGE ... WITHSCORES`` as member -> score (RESP3 pairs or a RESP2 flat list)."""
    if not reply:
        return {}
    if isinstance(reply[0], list | tuple):
        return {text(m): int(float(s)) for m, s in reply}
    return {text(m): int(float(s)) for m, s in zip(reply[::2], reply[1::2], strict=True)}


async def _go_pool(client: Client, name: str, now: int) -> PoolSnapshot | None:
    """A goa.design/pulse pool, from its replicated maps (reference/upstream-pool.md)."""
    keepalive = await _hash(client, f"map:{name}:worker-keepalive:content")
    registered = await _hash(client, f"map:{name}:workers:content")
    if keepalive is None and registered is None:
        return None
    ownership = await _hash(client, f"map:{name}:jobs:content") or {}
    node_beats = await _hash(client, f"map:{name}:node-keepalive:content") or {}
    tickers = await _hash(client, f"map:{name}:tickers:content") or {}
    shutdown = await _hash(client, f"map:{name}:shutdown:content") or {}
    beats = {k: v for k, v in (keepalive or {}).items() if not k.startswith("=")}
    ids = {k for k in (registered or {}) if not k.startswith("=")} | set(beats)
    jobs_of: dict[str, tuple[str, ...]] = {}
    for worker, raw in ownership.items():
        if worker.startswith("="):
            continue
        try:
            keys = json.loads(raw)
        except ValueError:
            continue
        if isinstance(keys, list):
            jobs_of[worker] = tuple(str(k) for k in keys)
    workers = tuple(
        WorkerSnapshot(
            id=worker,
            node_id=None,
            heartbeat_age=_age_ns(beats.get(worker), now),
            lease_left=None,
            jobs=jobs_of.get(worker, ()),
        )
        for worker in sorted(ids)
    )
    nodes = tuple(
        NodeSnapshot(id=node, lease_left=None, heartbeat_age=_age_ns(beat, now), workers=())
        for node, beat in sorted(node_beats.items())
        if not node.startswith("=")
    )
    epoch = datetime.fromtimestamp(0, tz=UTC)
    jobs = tuple(
        JobSnapshot(key, "running", worker, 0, "", epoch)
        for worker, keys in sorted(jobs_of.items())
        for key in keys
    )
    prefix = f"{name}:"
    return PoolSnapshot(
        name=name,
        layout="goa",
        nodes=nodes,
        workers=workers,
        jobs=tuple(sorted(jobs, key=lambda j: j.key)),
        queued=0,
        failed=(),
        tickers=tuple(sorted(t.removeprefix(prefix) for t in tickers if not t.startswith("="))),
        shutting_down=any(not k.startswith("=") for k in shutdown),
    )


def _age_ns(raw: str | None, now_ms: int) -> float | None:
    if raw is None:
        return None
    try:
        return (now_ms * 1_000_000 - int(raw)) / 1e9
    except ValueError:
        return None


async def _dead_letter_counts(client: Client, keys: Sequence[str]) -> dict[tuple[str, str], int]:
    """Dead letters per (original stream, sink), from the streams whose entries are ones."""
    counts: dict[tuple[str, str], int] = {}
    for key in keys:
        head = await client.execute("XRANGE", key, "-", "+", "COUNT", 1)
        if not head or b"original_stream" not in as_dict(head[0][1]):
            continue
        entries = await client.execute("XRANGE", key, "-", "+", "COUNT", MAX_DEAD_LETTERS_READ)
        for _ident, raw in entries or ():
            fields = as_dict(raw)
            stream, sink = fields.get(b"original_stream"), fields.get(b"sink")
            if stream is not None and sink is not None:
                pair = (text(stream), text(sink))
                counts[pair] = counts.get(pair, 0) + 1
    return counts


async def _stream(
    client: Client, key: str, dead: Mapping[tuple[str, str], int]
) -> StreamSnapshot | None:
    name = key.removeprefix(_STREAM_PREFIX)
    try:
        raw = await client.execute("XINFO", "STREAM", key)
    except Exception as exc:
        if is_no_such_key(exc):
            return None
        raise
    info = {text(k): v for k, v in as_dict(raw).items()}
    first, last = info.get("first-entry"), info.get("last-entry")
    sinks: list[SinkSnapshot] = []
    if info.get("groups"):
        for group in await client.execute("XINFO", "GROUPS", key) or ():
            g = {text(k): v for k, v in as_dict(group).items()}
            sink = text(g["name"])
            consumers = tuple(
                sorted(
                    (
                        ConsumerSnapshot(
                            name=text(c["name"]),
                            pending=int(c.get("pending") or 0),
                            idle=int(c.get("idle") or 0) / 1000,
                        )
                        for c in (
                            {text(k): v for k, v in as_dict(item).items()}
                            for item in await client.execute("XINFO", "CONSUMERS", key, sink) or ()
                        )
                    ),
                    key=lambda c: c.name,
                )
            )
            lag = g.get("lag")
            sinks.append(
                SinkSnapshot(
                    name=sink,
                    consumers=consumers,
                    pending=int(g.get("pending") or 0),
                    lag=None if lag is None else int(lag),
                    last_delivered_id=text(g.get("last-delivered-id") or "0-0"),
                    idle=min((c.idle for c in consumers), default=None),
                    dead_letters=dead.get((name, sink), 0),
                )
            )
    is_dead = False
    if first:
        is_dead = b"original_stream" in as_dict(first[1])
    return StreamSnapshot(
        name=name,
        length=int(info.get("length") or 0),
        first_id=text(first[0]) if first else None,
        last_id=text(last[0]) if last else None,
        sinks=tuple(sorted(sinks, key=lambda s: s.name)),
        dead_letter=is_dead,
    )
