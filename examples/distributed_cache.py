"""A distributed cache: one replicated map shared by two replicas, with a sliding TTL.

Run it with ``python examples/distributed_cache.py`` (an embedded server), or against your
own server with ``--redis-url redis://localhost:6379/0`` (or ``PULSE_REDIS_URL``).

Two service replicas (here: two replicas of the map in one process) share a cache of
expensive lookups. A hit is a local dict read, no Redis round trip; a miss computes the value
once and stores it with ``set_if_not_exists`` so that concurrent misses agree on one value.
With ``sliding_ttl`` every write keeps the cache alive; once nobody writes for that long,
Redis drops the whole hash and every replica empties itself (its periodic check sees it).
"""

from __future__ import annotations

import anyio
from _server import example_client

from pulse_trio import rmap

SLIDING_TTL = 0.5  # seconds without a write before the whole cache expires
CHECK = 0.1  # how often a replica checks its subscription (and notices expiry)

computed: list[str] = []


async def lookup(cache: rmap.Map, user: str) -> str:
    """The profile of ``user``: from the cache, else computed and cached."""
    if (hit := cache.get(user)) is not None:
        return hit
    computed.append(user)
    profile = f"profile of {user}"  # an expensive call in real life
    await cache.set_if_not_exists(user, profile)
    return profile


async def main() -> None:
    """Fill the cache from one replica, read it from the other, let it expire."""
    async with example_client("distributed_cache") as client:
        name = "distributed_cache:profiles"
        async with (
            rmap.join(client, name, sliding_ttl=SLIDING_TTL, ping_interval=CHECK) as replica_a,
            rmap.join(client, name, sliding_ttl=SLIDING_TTL, ping_interval=CHECK) as replica_b,
            replica_a.subscribe() as a_changes,
            replica_b.subscribe() as b_changes,
        ):
            for user in ("ada", "grace"):
                print(f"replica A: {await lookup(replica_a, user)!r}")
            with anyio.fail_after(5):
                while len(replica_b) < 2:  # until B's copy has both entries
                    await anext(b_changes)
            for user in ("ada", "grace"):
                print(f"replica B: {await lookup(replica_b, user)!r} (a local read)")
            print(f"computed {len(computed)} times for 4 lookups: {computed}")

            print(f"nobody writes for {SLIDING_TTL}s: Redis expires the cache...")
            with anyio.fail_after(5):
                while len(replica_a):
                    await anext(a_changes)
                while len(replica_b):
                    await anext(b_changes)
            print(f"both replicas are empty: A={replica_a.map()} B={replica_b.map()}")
            print(f"replica B after expiry: {await lookup(replica_b, 'ada')!r}")
            print(f"computed {len(computed)} times in all: {computed}")
            await replica_b.destroy()


if __name__ == "__main__":
    anyio.run(main, backend="trio")
