"""A pool node with one no-op worker in a process of its own (the failover benchmark kills it).

Usage: ``python -m benchmarks._pool_worker URL POOL WORKER_TTL [WORKERS [quiet]]``; prints
``ready`` once its workers (1 by default) are registered and ``start <key>`` for every job it
starts (nothing with ``quiet``: the throughput scenarios run their second process this way).
"""

from __future__ import annotations

import sys

import anyio

import pulse_trio
from pulse_trio import pool


class _Printer:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    async def start(self, job: pool.Job) -> None:
        if not self.quiet:
            print("start", job.key, flush=True)

    async def stop(self, key: str) -> None:
        pass


async def _main(url: str, name: str, ttl: float, workers: int, quiet: bool) -> None:
    async with pulse_trio.connect(url) as client, pool.open_node(client, name, worker_ttl=ttl) as n:
        for _ in range(workers):
            await n.add_worker(_Printer(quiet))
        print("ready", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    workers = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    quiet = sys.argv[5:6] == ["quiet"]
    anyio.run(_main, sys.argv[1], sys.argv[2], float(sys.argv[3]), workers, quiet, backend="trio")
