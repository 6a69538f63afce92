"""The pool's I/O layer: every Redis command a pool sends goes through :class:`PoolRedis`.

Few and simple calls (one Lua script per protocol step, a blocking ``XREAD`` of the node's
own stream on a dedicated connection, plain hash reads and writes).
Every method raises only pulse-trio errors (:func:`map_redis_errors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._boundary import Client, as_dict, map_redis_errors, read_reply, text
from .._errors import RedisUnavailableError
from .._lua import bind_script
from ._protocol import guard_key, jobs_key, node_stream_key

_SCRIPTS = (
    "register",
    "heartbeat",
    "dispatch",
    "take",
    "ack",
    "place",
    "move",
    "remove",
    "stop",
    "notify",
    "withdraw",
    "shutdown",
    "shutdown_ack",
    "shutdown_status",
    "destroy",
    "jobs",
    "tick",
)


class PoolRedis:
    """The Redis commands of one pool, bound to one client (no I/O until a call)."""

    def __init__(self, client: Client, pool: str) -> None:
        self.client = client
        self.pool = pool
        self.jobs = jobs_key(pool)
        self._keys = [self.jobs, guard_key(pool)]
        self._scripts = {
            name: bind_script(client, f"pool_{name}", prelude="pool_prelude") for name in _SCRIPTS
        }

    async def run(self, name: str, *args: str | bytes | int) -> Any:
        """Run the pool script ``pool_<name>.lua``: KEYS are the pool's jobs hash and its
        guard key (:func:`~._protocol.guard_key`: while the pool's slot migrates, Redis
        answers ``TRYAGAIN``, which the transport retries)."""
        with map_redis_errors(f"pool {self.pool!r}: {name}"):
            return await self._scripts[name](keys=self._keys, args=list(args))

    async def read(
        self, node_id: str, last_id: str, *, count: int, block_ms: int
    ) -> list[tuple[str, dict[Any, Any]]]:
        """Block up to ``block_ms`` for entries of the node's stream after ``last_id``."""
        key = node_stream_key(self.pool, node_id)
        operation = f"pool {self.pool!r}: reading node stream"
        with map_redis_errors(operation, reply=lambda message: _redirected(operation, message)):
            async with self.client.blocking(key=key) as conn:
                reply = await conn.execute(
                    "XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", key, last_id
                )
        return [
            (text(ident), fields) for batch in read_reply(reply).values() for ident, fields in batch
        ]

    async def shutting_down(self) -> bool:
        """Whether the pool's shutdown flag (or the tombstone it leaves) is set."""
        key = f"{self.jobs[: -len('jobs')]}shutdown"
        with map_redis_errors(f"pool {self.pool!r}: reading the shutdown flag"):
            return bool(await self.client.execute("EXISTS", key))

    async def workers(self) -> dict[str, str]:
        """Every registered worker of the pool -> its node."""
        key = f"{self.jobs[: -len('jobs')]}workers"
        with map_redis_errors(f"pool {self.pool!r}: listing workers"):
            flat = as_dict(await self.client.execute("HGETALL", key))
        return {text(k): text(v) for k, v in flat.items()}


class ScheduleRecord:
    """Which job keys a scheduler started (hash ``scheduled``, field ``<producer> NL <key>``)."""

    def __init__(self, io: PoolRedis, producer: str) -> None:
        self._io = io
        self._key = f"{io.jobs[: -len('jobs')]}scheduled"
        self._prefix = producer + "\n"

    async def keys(self) -> set[str]:
        """The keys this producer started and did not stop."""
        with map_redis_errors(f"pool {self._io.pool!r}: reading scheduled keys"):
            fields = await self._io.client.execute("HKEYS", self._key)
        return {text(f)[len(self._prefix) :] for f in fields if text(f).startswith(self._prefix)}

    async def add(self, keys: Sequence[str]) -> None:
        """Record started keys."""
        if keys:
            with map_redis_errors(f"pool {self._io.pool!r}: recording scheduled keys"):
                await self._io.client.execute(
                    "HSET", self._key, *[a for k in keys for a in (self._prefix + k, "1")]
                )

    async def remove(self, keys: Sequence[str]) -> None:
        """Forget stopped keys."""
        if keys:
            with map_redis_errors(f"pool {self._io.pool!r}: forgetting scheduled keys"):
                await self._io.client.execute("HDEL", self._key, *[self._prefix + k for k in keys])


def _redirected(operation: str, message: str) -> Exception | None:
    """A ``MOVED``/``ASK`` answer on the dedicated connection of a blocking read (a slot moved
    on a Redis Cluster): transient, the read is sent again (``MOVED`` taught the transport the
    new owner; an ``ASK`` lasts while the slot migrates)."""
    if message.startswith(("MOVED ", "ASK ")):
        return RedisUnavailableError(f"{operation} failed: the slot moved ({message}); retrying")
    return None
