"""The implementation of :mod:`pulse_trio.admin` (see its docstring)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal

import attrs

from ._boundary import Client, as_dict, check_client, is_no_such_key, map_redis_errors, text
from ._snapshots import (
    ConsumerSnapshot,
    JobSnapshot,
    MapSnapshot,
    NodeSnapshot,
    PoolSnapshot,
    SinkSnapshot,
    Snapshot,
    StreamSnapshot,
    WorkerSnapshot,
)

#: Version of the JSON shape written by :func:`to_json` (bumped on incompatible changes).
JSON_VERSION: Final = 1
#: Most entries of one dead-letter stream read to count them per sink.
MAX_DEAD_LETTERS_READ: Final = 10_000

_POOL_PREFIX = "pulse-trio:pool:"
_POOL_SUFFIXES = (
    "jobs|payloads|nodes|workers|epoch|unassigned|retry|queued|seq|shutdown|shutdown-acks|"
    "tickers|scheduled|beats|node:[^:]*"
)
_POOL_KEY = re.compile(r"pulse-trio:pool:\{(.+)\}:(?:" + _POOL_SUFFIXES + r")")
_GO_POOL_KEY = re.compile(r"map:(.+):worker-keepalive:content")
_STREAM_PREFIX = "pulse:stream:"
_MAP_KEY = re.compile(r"map:(.+):content")

Kind = Literal["pools", "streams", "maps"]


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


def _beat_age(beats: dict[str, int], node: str, now: int) -> float | None:
    """Seconds since ``node`` last beat (``now`` and the beats in Redis-clock ms)."""
    beat = beats.get(node)
    return None if not beat else max(0.0, (now - beat) / 1000)


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
            ("HGETALL", prefix + "beats"),
        ]
    )
    raw_nodes, raw_workers, raw_jobs, queued, tickers, shutdown, epoch, raw_beats = replies
    if not (raw_nodes or raw_workers or raw_jobs or queued or tickers or shutdown or epoch):
        return None
    deadlines = _scores(raw_nodes)
    beats = {text(n): _int(text(ms)) for n, ms in as_dict(raw_beats).items()}
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
            heartbeat_age=_beat_age(beats, node, now),
            workers=tuple(sorted(w for w, n in worker_nodes.items() if n == node)),
        )
        for node, deadline in sorted(deadlines.items())
    )
    workers = tuple(
        WorkerSnapshot(
            id=worker,
            node_id=node,
            heartbeat_age=_beat_age(beats, node, now),
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
