"""A Python job queue's worker in a process of its own (the 2-process ``jobs.throughput`` cases).

Usage: ``python -m benchmarks._queue_worker SYSTEM URL QUEUE CONCURRENCY``. Runs the same
worker as the benchmark's own process (:func:`benchmarks._queues.open_queue`: the queue's
documented configuration, ``CONCURRENCY`` concurrent jobs), prints ``ready`` once it runs,
then one line per batch of executed jobs holding how many (a batch is what executed within one
pass of the event loop, so the count reaches the parent at once without a write per job), and
runs until it is killed.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import anyio

from . import _queues


async def _main(system: str, url: str, name: str, concurrency: int) -> None:
    loop = asyncio.get_running_loop()
    pending = 0

    def flush() -> None:
        nonlocal pending
        sys.stdout.write(f"{pending}\n")
        sys.stdout.flush()
        pending = 0

    def executed() -> None:
        nonlocal pending
        if pending == 0:
            loop.call_soon(flush)
        pending += 1

    _queues.TRACKER.listener = executed
    async with _queues.open_queue(system, url, name, concurrency):
        print("ready", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    # The queues log to stderr at INFO (every job, for some); the parent keeps stderr only to
    # explain a failure to start.
    logging.basicConfig(level=logging.WARNING)
    anyio.run(_main, sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), backend="asyncio")
