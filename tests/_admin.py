"""A test-only :class:`pulse_trio.Client` with the Redis commands the tests assert with.

The library talks to Redis only through :meth:`Client.execute` and friends; tests inspect
and disturb the server with a handful of plain commands. :class:`AdminClient` adds them as
methods over ``execute`` (shaped for easy assertions: dicts, named tuples, ``bytes``), so
a test reads ``await client.hget(key, field)`` and still hands the same object to the
library. It is built on an open client (:meth:`AdminClient.of`) and owns nothing.
"""

from __future__ import annotations

import builtins
import datetime
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from pulse_trio import Client
from pulse_trio._boundary import as_dict, read_reply, stream_entries
from pulse_trio._redis import Script

Arg = bytes | str | int | float


class StreamEntry(NamedTuple):
    """One stream entry: its id and its fields (in order)."""

    identifier: bytes
    field_values: dict[bytes, bytes]


class PendingSummary(NamedTuple):
    """``XPENDING key group``: how many, the id range and the count per consumer."""

    pending: int
    minimum_identifier: bytes | None
    maximum_identifier: bytes | None
    consumers: dict[bytes, int]


class PendingEntry(NamedTuple):
    """One entry of ``XPENDING key group start end count``."""

    identifier: bytes
    consumer: bytes
    idle: int
    delivered: int


def _flat(items: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if isinstance(item, list | tuple | set | frozenset):
            out.extend(item)
        else:
            out.append(item)
    return out


def _entries(reply: Any) -> tuple[StreamEntry, ...]:
    return tuple(StreamEntry(ident, fields) for ident, fields in stream_entries(reply))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _info_value(value: str) -> Any:
    if ("=" in value and "," in value) or value.count("=") == 1:
        parsed: dict[str, Any] = {}
        for part in value.split(","):
            key, _, raw = part.partition("=")
            parsed[key] = _info_value(raw) if "=" not in raw else raw
        return parsed
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


class AdminClient(Client):
    """A :class:`pulse_trio.Client` plus the commands tests use to look at Redis."""

    @classmethod
    def of(cls, client: Client) -> AdminClient:
        """The same connections as ``client``, with the test helpers."""
        return cls(client._topology, client.settings, client.url)

    # --- keys and strings ---------------------------------------------------------------

    async def get(self, key: Arg) -> bytes | None:
        """GET."""
        result: bytes | None = await self.execute("GET", key)
        return result

    async def set(
        self, key: Arg, value: Arg, *, px: int | None = None, ex: int | None = None
    ) -> bool:
        """SET (with PX or EX)."""
        args: list[Arg] = ["SET", key, value]
        if px is not None:
            args += ["PX", px]
        if ex is not None:
            args += ["EX", ex]
        return bool(await self.execute(*args) == b"OK")

    async def mset(self, mapping: Mapping[Arg, Arg]) -> bool:
        """MSET."""
        return bool(await self.execute("MSET", *_flat(mapping.items())) == b"OK")

    async def exists(self, *keys: Arg | Sequence[Arg]) -> int:
        """EXISTS (keys as arguments or in a list)."""
        result: int = await self.execute("EXISTS", *_flat(keys))
        return result

    async def delete(self, *keys: Arg | Sequence[Arg]) -> int:
        """DEL (keys as arguments or in a list)."""
        result: int = await self.execute("DEL", *_flat(keys))
        return result

    async def pttl(self, key: Arg) -> int:
        """PTTL."""
        result: int = await self.execute("PTTL", key)
        return result

    async def pexpire(self, key: Arg, milliseconds: int | datetime.timedelta) -> bool:
        """PEXPIRE."""
        if isinstance(milliseconds, datetime.timedelta):
            milliseconds = int(milliseconds.total_seconds() * 1000)
        return bool(await self.execute("PEXPIRE", key, milliseconds))

    async def type(self, key: Arg) -> bytes:
        """TYPE."""
        result: bytes = await self.execute("TYPE", key)
        return result

    async def keys(self, pattern: Arg = "*") -> builtins.set[bytes]:
        """KEYS on every primary."""
        found: builtins.set[bytes] = builtins.set()
        for reply in await self.execute_on_primaries("KEYS", pattern):
            found.update(reply)
        return found

    async def scan_iter(self, match: Arg = "*") -> AsyncIterator[bytes]:
        """Every key matching ``match`` (KEYS on every primary; tests hold few keys)."""
        for key in sorted(await self.keys(match)):
            yield key

    async def flushall(self) -> None:
        """FLUSHALL on every primary."""
        await self.execute_on_primaries("FLUSHALL")

    async def time(self) -> datetime.datetime:
        """The server's clock (TIME), with microseconds."""
        seconds, micros = await self.execute("TIME")
        return datetime.datetime.fromtimestamp(int(seconds) + int(micros) / 1e6, datetime.UTC)

    async def publish(self, channel: Arg, message: Arg) -> int:
        """PUBLISH."""
        result: int = await self.execute("PUBLISH", channel, message)
        return result

    async def eval(self, source: str, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        """EVAL."""
        return await self.execute("EVAL", source, len(keys), *keys, *args)

    def register_script(self, source: str) -> Any:
        """A callable ``script(keys=[...], args=[...])`` run by SHA."""
        script = Script.of(source)

        async def run(keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
            return await self.execute_script(script, keys, args)

        return run

    # --- hashes and sorted sets -----------------------------------------------------------

    async def hget(self, key: Arg, field: Arg) -> bytes | None:
        """HGET."""
        result: bytes | None = await self.execute("HGET", key, field)
        return result

    async def hgetall(self, key: Arg) -> dict[bytes, bytes]:
        """HGETALL as a dict."""
        return as_dict(await self.execute("HGETALL", key))

    async def hkeys(self, key: Arg) -> list[bytes]:
        """HKEYS."""
        result: list[bytes] = await self.execute("HKEYS", key)
        return result

    async def hexists(self, key: Arg, field: Arg) -> bool:
        """HEXISTS."""
        return bool(await self.execute("HEXISTS", key, field))

    async def hset(self, key: Arg, mapping: Mapping[Arg, Arg]) -> int:
        """HSET of every field of ``mapping``."""
        result: int = await self.execute("HSET", key, *_flat(mapping.items()))
        return result

    async def hdel(self, key: Arg, fields: Sequence[Arg]) -> int:
        """HDEL."""
        result: int = await self.execute("HDEL", key, *fields)
        return result

    async def hincrby(self, key: Arg, field: Arg, increment: int) -> int:
        """HINCRBY."""
        result: int = await self.execute("HINCRBY", key, field, increment)
        return result

    async def zrem(self, key: Arg, members: Sequence[Arg]) -> int:
        """ZREM."""
        result: int = await self.execute("ZREM", key, *members)
        return result

    # --- streams --------------------------------------------------------------------------

    async def xadd(
        self,
        key: Arg,
        field_values: Mapping[Arg, Arg],
        identifier: Arg | None = None,
    ) -> bytes:
        """XADD; returns the new id."""
        result: bytes = await self.execute(
            "XADD", key, identifier or "*", *_flat(field_values.items())
        )
        return result

    async def xlen(self, key: Arg) -> int:
        """XLEN."""
        result: int = await self.execute("XLEN", key)
        return result

    async def xrange(
        self, key: Arg, start: Arg = "-", end: Arg = "+", count: int | None = None
    ) -> tuple[StreamEntry, ...]:
        """XRANGE."""
        extra: list[Arg] = ["COUNT", count] if count is not None else []
        return _entries(await self.execute("XRANGE", key, start, end, *extra))

    async def xrevrange(
        self, key: Arg, end: Arg = "+", start: Arg = "-", count: int | None = None
    ) -> tuple[StreamEntry, ...]:
        """XREVRANGE."""
        extra: list[Arg] = ["COUNT", count] if count is not None else []
        return _entries(await self.execute("XREVRANGE", key, end, start, *extra))

    async def xack(self, key: Arg, group: Arg, identifiers: Sequence[Arg]) -> int:
        """XACK."""
        result: int = await self.execute("XACK", key, group, *identifiers)
        return result

    async def xgroup_create(
        self, key: Arg, group: Arg, identifier: Arg = "$", *, mkstream: bool = False
    ) -> bool:
        """XGROUP CREATE."""
        extra: list[Arg] = ["MKSTREAM"] if mkstream else []
        return bool(await self.execute("XGROUP", "CREATE", key, group, identifier, *extra) == b"OK")

    async def xgroup_destroy(self, key: Arg, group: Arg) -> int:
        """XGROUP DESTROY."""
        result: int = await self.execute("XGROUP", "DESTROY", key, group)
        return result

    async def xgroup_createconsumer(self, key: Arg, group: Arg, consumer: Arg) -> int:
        """XGROUP CREATECONSUMER."""
        result: int = await self.execute("XGROUP", "CREATECONSUMER", key, group, consumer)
        return result

    async def xreadgroup(
        self,
        group: Arg,
        consumer: Arg,
        *,
        streams: Mapping[Arg, Arg],
        count: int | None = None,
    ) -> dict[bytes, tuple[StreamEntry, ...]]:
        """XREADGROUP without BLOCK."""
        extra: list[Arg] = ["COUNT", count] if count is not None else []
        reply = await self.execute(
            "XREADGROUP", "GROUP", group, consumer, *extra,
            "STREAMS", *streams.keys(), *streams.values(),
        )  # fmt: skip
        return {
            k: tuple(StreamEntry(i, f) for i, f in entries)
            for k, entries in read_reply(reply).items()
        }

    async def xpending(
        self,
        key: Arg,
        group: Arg,
        start: Arg | None = None,
        end: Arg | None = None,
        count: int | None = None,
        consumer: Arg | None = None,
    ) -> Any:
        """XPENDING: the summary, or with ``start``/``end``/``count`` the entries."""
        if start is None:
            total, low, high, per_consumer = await self.execute("XPENDING", key, group)
            consumers = {name: int(n) for name, n in per_consumer or ()}
            return PendingSummary(total, low, high, consumers)
        args: list[Arg] = ["XPENDING", key, group, start, end or "+", count or 10]
        if consumer is not None:
            args.append(consumer)
        return tuple(PendingEntry(*item) for item in await self.execute(*args))

    async def xinfo_groups(self, key: Arg) -> list[dict[bytes, Any]]:
        """XINFO GROUPS (one dict per group, ``bytes`` keys)."""
        return [as_dict(g) for g in await self.execute("XINFO", "GROUPS", key)]

    async def xinfo_consumers(self, key: Arg, group: Arg) -> list[dict[bytes, Any]]:
        """XINFO CONSUMERS (one dict per consumer, ``bytes`` keys)."""
        return [as_dict(c) for c in await self.execute("XINFO", "CONSUMERS", key, group)]

    # --- server ---------------------------------------------------------------------------

    async def info(self, section: str | None = None) -> dict[str, Any]:
        """INFO parsed into a dict (``cmdstat_x`` lines into dicts of their own)."""
        raw = await self.execute("INFO", *([section] if section else []))
        parsed: dict[str, Any] = {}
        for line in _text(raw).splitlines():
            if not line or line.startswith("#") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            parsed[name] = _info_value(value)
        return parsed

    async def client_list(self) -> list[dict[str, str]]:
        """CLIENT LIST, one dict per connection."""
        clients = []
        for line in _text(await self.execute("CLIENT", "LIST")).splitlines():
            fields = dict(part.partition("=")[::2] for part in line.split(" ") if part)
            clients.append(fields)
        return clients

    async def client_kill(
        self,
        *,
        identifier: Arg | None = None,
        type_: str | None = None,
        skipme: bool | None = None,
    ) -> int:
        """CLIENT KILL by ``ID`` and/or ``TYPE`` (``"normal"``, ``"pubsub"``...); returns how
        many connections were killed."""
        args: list[Arg] = ["CLIENT", "KILL"]
        if identifier is not None:
            args += ["ID", identifier]
        if type_ is not None:
            args += ["TYPE", type_]
        if skipme is not None:
            args += ["SKIPME", "yes" if skipme else "no"]
        result: int = await self.execute(*args)
        return result

    # --- cluster --------------------------------------------------------------------------

    async def cluster_info(self) -> dict[str, str]:
        """CLUSTER INFO as a dict of strings."""
        raw = _text(await self.execute("CLUSTER", "INFO"))
        return dict(line.partition(":")[::2] for line in raw.splitlines() if ":" in line)

    async def cluster_keyslot(self, key: Arg) -> int:
        """CLUSTER KEYSLOT."""
        result: int = await self.execute("CLUSTER", "KEYSLOT", key)
        return result

    async def cluster_nodes(self) -> list[dict[str, Any]]:
        """CLUSTER NODES: one dict per node (``id``, ``host``, ``port``, ``flags``,
        ``master``)."""
        return _parse_nodes(_text(await self.execute("CLUSTER", "NODES")))

    async def cluster_slots(self) -> list[tuple[int, int, list[tuple[str, int, str]]]]:
        """CLUSTER SLOTS: per slot range ``(first, last, [(host, port, id) of the master,
        then of each replica])``."""
        return [
            (int(first), int(last), [(_text(n[0]), int(n[1]), _text(n[2])) for n in nodes])
            for first, last, *nodes in await self.execute("CLUSTER", "SLOTS")
        ]

    async def cluster_replicas(self, node_id: str) -> list[dict[str, Any]]:
        """CLUSTER REPLICAS of one master."""
        lines = await self.execute("CLUSTER", "REPLICAS", node_id)
        return _parse_nodes("\n".join(_text(line) for line in lines))


def _parse_nodes(raw: str) -> list[dict[str, Any]]:
    nodes = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        parts = line.split()
        address = parts[1].split("@")[0]
        host, _, port = address.rpartition(":")
        nodes.append(
            {
                "id": parts[0],
                "host": host,
                "port": int(port),
                "flags": tuple(parts[2].split(",")),
                "master": parts[3],
            }
        )
    return nodes
