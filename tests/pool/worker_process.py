"""A pool node with workers in a process of its own, for tests that kill or pause it.

Usage: ``python worker_process.py URL POOL WORKER_TTL WORKERS``

Prints ``ready <node id> <worker id>...`` once its workers are registered, then
``start <key> <worker id> <requeued>`` and ``stop <key>`` for every handler call, flushing
each line. Runs until it is killed (or its stdin closes).
"""

from __future__ import annotations

import sys

import anyio

import pulse_trio
from pulse_trio import pool


class Printer:
    async def start(self, job: pool.Job) -> None:
        print("start", job.key, job.worker_id, int(job.requeued), flush=True)

    async def stop(self, key: str) -> None:
        print("stop", key, flush=True)


async def main(url: str, name: str, ttl: float, count: int) -> None:
    async with (
        pulse_trio.connect(url) as client,
        pool.open_node(client, name, worker_ttl=ttl, ack_grace_period=5.0) as node,
    ):
        workers = [await node.add_worker(Printer()) for _ in range(count)]
        print("ready", node.id, *[w.id for w in workers], flush=True)
        await anyio.wrap_file(sys.stdin).read()


if __name__ == "__main__":
    url, name, ttl, count = sys.argv[1:5]
    anyio.run(main, url, name, float(ttl), int(count), backend="trio")
