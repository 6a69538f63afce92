"""The stateless layer of a replicated map: its writes (one Lua script each) and plain reads.

:class:`MapOps` holds no local copy and no subscription: it is what :class:`~pulse_trio.rmap.Map`
writes through, and what other packages use when they only need to write a map, or read it
once (a sink's membership and keep-alive maps, ``Stream.destroy``). Every write is the same
script a replica runs, so replicas (Go or Python) see it like any other write.

Errors are translated here, at the boundary: script errors that mean "the stored value does
not fit" become :class:`MapValueError`, transient failures
:class:`pulse_trio.RedisUnavailableError`, anything else :class:`pulse_trio.RedisCommandError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from .. import _metrics
from .._boundary import (
    Client,
    as_dict,
    check_client,
    map_redis_errors,
    optional_text,
    raise_pulse_error,
    text,
)
from .._lua import BoundScript, bind_script
from .._names import ttl_script_args, validate_duration, validate_name
from ._errors import MapValueError, validate_key, validate_value
from ._protocol import REV_FIELD, content_key, parse_values, snapshot_from_hash, updates_channel

SCRIPTS: Final = (
    "rmap_set",
    "rmap_set_if_not_exists",
    "rmap_test_and_set",
    "rmap_inc",
    "rmap_append",
    "rmap_remove",
    "rmap_delete",
    "rmap_reset",
)
#: Markers the scripts put in an error reply when the stored value does not fit the operation.
_VALUE_MARKERS = ("PULSE_NOT_AN_INTEGER", "PULSE_NOT_A_LIST")


def validate_ttls(ttl: float | None, sliding_ttl: float | None) -> tuple[str, str]:
    """Check a map's TTL options; return the script arguments for them.

    Raises:
        ValueError: A TTL is not a positive number of seconds, or both are given.
    """
    ttl = validate_duration("ttl", ttl, allow_zero=False)
    sliding_ttl = validate_duration("sliding_ttl", sliding_ttl, allow_zero=False)
    if ttl is not None and sliding_ttl is not None:
        raise ValueError("give ttl (absolute) or sliding_ttl, not both")
    return ttl_script_args(ttl, sliding_ttl)


@attrs.frozen(eq=False)
class MapOps:
    """Writes and reads of the map ``name``, each straight to Redis.

    Build it with :meth:`create`. Keys and values are validated before any I/O.
    """

    client: Client
    name: str
    key: str
    channel: str
    ttl_args: tuple[str, str]
    scripts: Mapping[str, BoundScript]

    @classmethod
    def create(
        cls,
        client: Client,
        name: str,
        *,
        ttl: float | None = None,
        sliding_ttl: float | None = None,
    ) -> MapOps:
        """Check the name and options (no I/O) and bind the map's scripts to ``client``.

        Raises:
            pulse_trio.InvalidNameError: Bad map name.
            ValueError: Bad TTLs.
            TypeError: ``client`` is not a :class:`pulse_trio.Client`.
        """
        validate_name("map", name)
        ttl_args = validate_ttls(ttl, sliding_ttl)
        check_client(client)
        scripts = {
            script: bind_script(client, script, prelude="rmap_prelude") for script in SCRIPTS
        }
        return cls(client, name, content_key(name), updates_channel(name), ttl_args, scripts)

    def _value_error(self, key: str, operation: str) -> Any:
        def translate(reply: str) -> Exception | None:
            for marker in _VALUE_MARKERS:
                if marker in reply:
                    detail = reply.split(marker, 1)[1].strip()
                    return MapValueError(
                        key, f"map {self.name!r}: {operation} failed: {detail}; nothing was changed"
                    )
            return None

        return translate

    async def _call(self, script: str, operation: str, key: str, *args: str) -> Any:
        # What map_redis_errors does, without building its message and translator on the
        # success path (every write goes through here).
        try:
            reply = await self.scripts[script](
                keys=[self.key], args=[self.channel, *self.ttl_args, key, *args]
            )
        except Exception as exc:
            raise_pulse_error(
                exc,
                f"map {self.name!r}: {operation} of key {key!r}",
                reply=self._value_error(key, operation),
                hint="local reads still work, retry the write later",
            )
        _metrics.map_cell(self.name).writes += 1
        return reply

    # ------------------------------------------------------------------ writes

    async def set(self, key: str, value: str) -> tuple[bool, str, int]:
        """Set ``key``; return (whether it existed, the previous value, the new revision)."""
        validate_key(key)
        validate_value("values", value)
        existed, previous, revision = await self._call("rmap_set", "set", key, value)
        return bool(existed), optional_text(previous) or "", int(revision)

    async def set_if_not_exists(self, key: str, value: str) -> bool:
        """Set ``key`` if absent; return whether it was written."""
        validate_key(key)
        validate_value("values", value)
        return bool(await self._call("rmap_set_if_not_exists", "set_if_not_exists", key, value))

    async def test_and_set(self, key: str, test: str, value: str) -> str | None:
        """Swap ``key`` to ``value`` iff it holds ``test``; return the value found."""
        validate_key(key)
        validate_value("test values", test)
        validate_value("values", value)
        return optional_text(
            await self._call("rmap_test_and_set", "test_and_set", key, test, value)
        )

    async def inc(self, key: str, delta: int) -> int:
        """Add ``delta`` to the integer at ``key``; return the new value."""
        validate_key(key)
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError(f"delta must be an int, not {type(delta).__name__}")
        return int(await self._call("rmap_inc", "inc", key, str(delta)))

    async def append(self, key: str, values: Iterable[str], *, unique: bool) -> list[str]:
        """Append to the list at ``key`` (only missing items if ``unique``); return the list."""
        validate_key(key)
        items = [validate_value("list items", value) for value in values]
        operation = "append_unique_values" if unique else "append_values"
        raw = await self._call("rmap_append", operation, key, "1" if unique else "0", *items)
        return [] if raw is None else parse_values(text(raw))

    async def remove_values(self, key: str, values: Iterable[str]) -> tuple[list[str] | None, bool]:
        """Remove items from the list at ``key``; return (remaining list or None, removed?)."""
        validate_key(key)
        items = [validate_value("list items", value) for value in values]
        raw, removed = await self._call("rmap_remove", "remove_values", key, *items)
        return (None if raw is None else parse_values(text(raw))), bool(removed)

    async def delete(self, key: str) -> str | None:
        """Delete ``key``; return the previous value."""
        validate_key(key)
        return optional_text(await self._call("rmap_delete", "delete", key, "0", ""))

    async def test_and_delete(self, key: str, test: str) -> str | None:
        """Delete ``key`` iff it holds ``test``; return the value found."""
        validate_key(key)
        validate_value("test values", test)
        return optional_text(await self._call("rmap_delete", "test_and_delete", key, "1", test))

    async def test_and_reset(self, expected: Mapping[str, str]) -> bool:
        """Reset iff every key of ``expected`` holds its value (empty: always)."""
        keys = [validate_key(k) for k in expected]
        tests = [validate_value("test values", expected[k]) for k in keys]
        return bool(await self._call("rmap_reset", "test_and_reset", "reset", *keys, *tests))

    async def reset(self) -> None:
        """Remove every key (the revision counter survives)."""
        await self._call("rmap_reset", "reset", "reset")

    async def destroy(self) -> None:
        """Remove every key and leave a destroy tombstone (replicas see a RESET)."""
        await self._call("rmap_reset", "destroy", "destroy")

    # ------------------------------------------------------------------ reads

    async def read_all(self) -> tuple[dict[str, str], int, str | None]:
        """Read the whole hash: (user content, revision, kind of the last write)."""
        with map_redis_errors(f"map {self.name!r}: reading the content"):
            raw = as_dict(await self.client.execute("HGETALL", self.key))
        return snapshot_from_hash(raw)

    async def get(self, key: str) -> str | None:
        """Read one key from Redis (not from a replica)."""
        validate_key(key)
        with map_redis_errors(f"map {self.name!r}: reading key {key!r}"):
            raw = await self.client.execute("HGET", self.key, key)
        return optional_text(raw)

    async def get_values(self, key: str) -> list[str] | None:
        """Read the list at ``key`` from Redis, ``None`` if absent."""
        raw = await self.get(key)
        return None if raw is None else parse_values(raw)

    async def stored_revision(self) -> int:
        """Read the stored revision (0 when the hash or its ``=rev`` is missing)."""
        with map_redis_errors(f"map {self.name!r}: reading the revision"):
            raw = await self.client.execute("HGET", self.key, REV_FIELD)
        value = optional_text(raw)
        return int(value) if value and value.isdigit() else 0

    async def exists(self) -> bool:
        """Whether the map's hash exists in Redis."""
        with map_redis_errors(f"map {self.name!r}: checking it exists"):
            return bool(await self.client.execute("EXISTS", self.key))
