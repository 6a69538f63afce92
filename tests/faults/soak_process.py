"""One process of the mixed soak (tests/faults/test_soak.py), killed and frozen by its chaos.

Usage: ``python soak_process.py ROLE URL NAME LOG``

Appends one line per fact to ``LOG`` (``<unix time> <what> <args...>``, flushed each time;
a restarted process appends to the same file after a ``boot`` line):

- ``sink``: a sink instance of the stream ``NAME`` (group ``soak``): ``event <id>`` for each
  delivery, ``ack <id>`` once acknowledged.
- ``worker``: a pool node of the pool ``NAME`` with one worker and the ticker ``tick``:
  ``start <key>`` / ``stop <key>`` around each job, ``tick <at> <count>`` for each tick.
- ``replica``: a replica of the map ``NAME`` that writes its own keys: ``set <key> <value>``
  after each acknowledged write (until a file ``quiet`` appears next to ``LOG``), and every
  0.2 s its whole map as ``map <json>``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import IO

import anyio

import pulse_trio
from pulse_trio import pool, rmap, streaming

#: Soak timings (seconds), shared with the test.
WORKER_TTL = 3.0
ACK_GRACE = 3.0
TICK_INTERVAL = 0.2


def log(out: IO[str], *parts: object) -> None:
    """Append one fact to the log."""
    out.write(" ".join([f"{time.time():.6f}", *map(str, parts)]) + "\n")
    out.flush()


async def run_sink(url: str, name: str, out: IO[str]) -> None:
    async with (
        pulse_trio.connect(url, client_name="soak-sink") as client,
        streaming.Stream(client, name).open_sink(
            "soak", start=streaming.OLDEST, ack_grace_period=ACK_GRACE, block=0.2
        ) as sink,
    ):
        log(out, "ready")
        async for event in sink:
            log(out, "event", event.id)
            while True:
                try:
                    await sink.ack(event)
                    break
                except pulse_trio.RedisUnavailableError:
                    await anyio.sleep(0.05)
            log(out, "ack", event.id)


class Handler:
    def __init__(self, out: IO[str]) -> None:
        self.out = out

    async def start(self, job: pool.Job) -> None:
        log(self.out, "start", job.key)

    async def stop(self, key: str) -> None:
        log(self.out, "stop", key)


async def run_worker(url: str, name: str, out: IO[str]) -> None:
    async with (
        pulse_trio.connect(url, client_name="soak-worker") as client,
        pool.open_node(client, name, worker_ttl=WORKER_TTL, ack_grace_period=5.0) as node,
    ):
        await node.add_worker(Handler(out))
        log(out, "ready", node.id)
        async with node.open_ticker("tick", TICK_INTERVAL) as ticker:
            async for tick in ticker:
                log(out, "tick", tick.at.timestamp(), tick.count)


async def run_replica(url: str, name: str, out: IO[str]) -> None:
    me = os.getpid()
    async with (
        pulse_trio.connect(url, client_name="soak-replica") as client,
        rmap.join(client, name) as replica,
        anyio.create_task_group() as tg,
    ):
        log(out, "ready")

        async def snapshots() -> None:
            while True:
                log(out, "map", json.dumps(replica.map(), sort_keys=True, separators=(",", ":")))
                await anyio.sleep(0.2)

        tg.start_soon(snapshots)
        n = 0
        quiet = Path(out.name).parent / "quiet"
        while True:
            if quiet.exists():  # the test checks convergence: stop writing
                await anyio.sleep(0.1)
                continue
            key, value = f"p{me}-{n % 20}", str(n)
            try:
                await replica.set(key, value)
            except pulse_trio.RedisUnavailableError:
                await anyio.sleep(0.05)
                continue
            log(out, "set", key, value)
            n += 1
            await anyio.sleep(0.02)


ROLES = {"sink": run_sink, "worker": run_worker, "replica": run_replica}

if __name__ == "__main__":
    role, url, name, path = sys.argv[1:5]
    with open(path, "a", encoding="utf-8") as out:
        log(out, "boot", os.getpid())
        anyio.run(ROLES[role], url, name, out, backend="trio")
