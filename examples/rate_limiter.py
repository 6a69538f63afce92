"""A global rate limiter: one counter per time window, shared through a replicated map.

Run it with ``python examples/rate_limiter.py`` (an embedded server), or against your own
server with ``--redis-url redis://localhost:6379/0`` (or ``PULSE_REDIS_URL``).

Two service replicas, each with several concurrent request handlers, share a limit of
``LIMIT`` calls per ``WINDOW`` seconds. Each call increments the counter of the current
window with ``inc``, which is atomic in Redis, so however many replicas count, no window lets
more than ``LIMIT`` calls through. (Windows come from the hosts' clocks: keep them in sync.)
"""

from __future__ import annotations

import time
from collections import Counter

import anyio
from _server import example_client

from pulse_trio import rmap

LIMIT = 10  # calls allowed per window, across every replica
WINDOW = 0.25  # seconds
RUN_FOR = 1.0  # seconds of traffic
HANDLERS_PER_REPLICA = 3
REQUEST_EVERY = 0.02  # seconds between two requests of one handler

allowed: Counter[int] = Counter()
denied: Counter[int] = Counter()


async def acquire(limiter: rmap.Map) -> bool:
    """Count one call in the current window; True if it is within the limit."""
    window = int(time.time() // WINDOW)
    count = await limiter.inc(f"window-{window}")
    if count == 1:  # the first call of a window forgets the one before last
        await limiter.delete(f"window-{window - 2}")
    (allowed if count <= LIMIT else denied)[window] += 1
    return count <= LIMIT


async def handler(limiter: rmap.Map, until: float) -> None:
    """Make requests until ``until``; each one asks the limiter first."""
    while time.time() < until:
        await acquire(limiter)
        await anyio.sleep(REQUEST_EVERY)


async def main() -> None:
    """Run two replicas' handlers for a while, then show each window's counts."""
    async with example_client("rate_limiter") as client:
        name = "rate_limiter:api-calls"
        until = time.time() + RUN_FOR
        async with rmap.join(client, name) as replica_a, rmap.join(client, name) as replica_b:
            async with anyio.create_task_group() as tg:
                for replica in (replica_a, replica_b):
                    for _ in range(HANDLERS_PER_REPLICA):
                        tg.start_soon(handler, replica, until)
            await replica_a.destroy()

        first = min(allowed | denied)
        for window in sorted(allowed | denied):
            print(
                f"  window {window - first}: {allowed[window]:2d} allowed, "
                f"{denied[window]:2d} denied"
            )
        busiest = max(allowed.values())
        print(f"{sum(allowed.values())} calls allowed, {sum(denied.values())} denied")
        print(f"at most {busiest} calls in one window (limit {LIMIT})")


if __name__ == "__main__":
    anyio.run(main, backend="trio")
