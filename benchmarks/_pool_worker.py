"""A pool node with one no-op worker in a process of its own (the failover benchmark kills it).

Usage: ``python -m benchmarks._pool_worker URL POOL WORKER_TTL``; prints ``ready`` once its
worker is registered and ``start <key>`` for every job it starts.
"""

from __future__ import annotations

import sys

import anyio

import pulse_trio
from pulse_trio import pool


class _Printer:
    async def start(self, job: pool.Job) -> None:
        print("start", job.key, flush=True)

    async def stop(self, key: str) -> None:
        pass


async def _main(url: str, name: str, ttl: float) -> None:
    async with pulse_trio.connect(url) as client, pool.open_node(client, name, worker_ttl=ttl) as n:
        await n.add_worker(_Printer())
        print("ready", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(_main, sys.argv[1], sys.argv[2], float(sys.argv[3]), backend="trio")
