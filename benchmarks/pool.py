"""Worker pools: dispatch latency and throughput, and failover time after a SIGKILL.

Measures, on the backend it runs under, with one node of :data:`WORKERS` workers running a
no-op handler and :data:`PAYLOAD_SIZE`-byte payloads:

- ``dispatch_job sequential``: :data:`JOBS` dispatches one after the other, each returning
  once its worker's ``start`` returned: jobs/s and p50/p99 latency;
- ``dispatch_job x64 concurrent``: the same jobs dispatched by :data:`DISPATCHERS` tasks;
- ``failover after SIGKILL``: a second node in a child process (``worker_ttl`` =
  :data:`FAILOVER_TTL`) runs part of :data:`FAILOVER_JOBS` jobs; it is killed with SIGKILL and
  the time until every one of its jobs runs on the surviving node is reported (standalone
  servers only).
"""

from __future__ import annotations

import signal
import sys
import time

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

from pulse_trio import pool

from ._common import (
    Client,
    Result,
    latency_results,
    progress,
    throughput_result,
    unique_name,
)

NAME = "pool"
#: Workers on the benchmarked node.
WORKERS = 4
#: Bytes per job payload.
PAYLOAD_SIZE = 64
#: Jobs per timed run.
JOBS = 2_000
#: Untimed jobs before the timed runs.
WARMUP_JOBS = 200
#: Timed runs of each throughput measurement (the median is reported).
RUNS = 3
#: Concurrent dispatching tasks.
DISPATCHERS = 64
#: worker_ttl of the failover measurement, in seconds.
FAILOVER_TTL = 2.0
#: Jobs spread over the two nodes of the failover measurement.
FAILOVER_JOBS = 200

CONSTANTS = {
    "WORKERS": WORKERS,
    "PAYLOAD_SIZE": PAYLOAD_SIZE,
    "JOBS": JOBS,
    "WARMUP_JOBS": WARMUP_JOBS,
    "RUNS": RUNS,
    "DISPATCHERS": DISPATCHERS,
    "FAILOVER_TTL": FAILOVER_TTL,
    "FAILOVER_JOBS": FAILOVER_JOBS,
}

PAYLOAD = b"x" * PAYLOAD_SIZE


class _NoOp:
    def __init__(self) -> None:
        self.running: set[str] = set()
        self.changed = anyio.Event()

    async def start(self, job: pool.Job) -> None:
        self.running.add(job.key)
        self.changed.set()

    async def stop(self, key: str) -> None:
        self.running.discard(key)


async def run(client: Client, backend: str) -> list[Result]:
    """Run every pool measurement on the current backend and return the rows."""
    results = await _dispatch(client, backend)
    results += await _failover(client, backend)
    return results


async def _dispatch(client: Client, backend: str) -> list[Result]:
    sequential: list[float] = []
    concurrent: list[float] = []
    latencies: list[float] = []
    for run_index in range(RUNS + 1):
        name = unique_name("pool")
        async with pool.open_node(client, name, max_queued_jobs=JOBS + 1) as node:
            for _ in range(WORKERS):
                await node.add_worker(_NoOp())
            count = WARMUP_JOBS if run_index == 0 else JOBS
            progress(f"[{backend}] pool: {count} sequential dispatches (run {run_index})")
            started = time.perf_counter()
            for i in range(count):
                before = time.perf_counter()
                await node.dispatch_job(f"s{i}", PAYLOAD)
                if run_index:
                    latencies.append(time.perf_counter() - before)
            if run_index:
                sequential.append(time.perf_counter() - started)

            async def dispatcher(first: int, total: int, n: pool.Node = node) -> None:
                for i in range(first, total, DISPATCHERS):
                    await n.dispatch_job(f"c{i}", PAYLOAD)

            progress(f"[{backend}] pool: {count} dispatches by {DISPATCHERS} tasks")
            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for first in range(DISPATCHERS):
                    tg.start_soon(dispatcher, first, count)
            if run_index:
                concurrent.append(time.perf_counter() - started)
            await node.shutdown()
    return [
        throughput_result(NAME, "dispatch_job sequential", backend, JOBS, sequential, "jobs/s"),
        *latency_results(NAME, "dispatch_job sequential latency", backend, latencies),
        throughput_result(
            NAME, f"dispatch_job x{DISPATCHERS} concurrent", backend, JOBS, concurrent, "jobs/s"
        ),
    ]


def _url_of(client: Client) -> str | None:
    return None if client.is_cluster or "+sentinel" in client.url else client.url


async def _failover(client: Client, backend: str) -> list[Result]:
    url = _url_of(client)
    if url is None:
        progress(f"[{backend}] pool: failover skipped (needs a standalone TCP server)")
        return []
    name = unique_name("failover")
    survivor = _NoOp()
    command = [sys.executable, "-m", "benchmarks._pool_worker", url, name, str(FAILOVER_TTL)]
    async with (
        pool.open_node(client, name, worker_ttl=FAILOVER_TTL) as node,
        await anyio.open_process(command) as process,
    ):
        assert process.stdout is not None
        lines = BufferedByteReceiveStream(process.stdout)
        remote: set[str] = set()
        with anyio.fail_after(30):
            assert (await lines.receive_until(b"\n", 1000)) == b"ready"
            await node.add_worker(survivor)
            for i in range(FAILOVER_JOBS):
                await node.dispatch_job(f"f{i}", PAYLOAD)
            while len(remote) + len(survivor.running) < FAILOVER_JOBS:
                _, key = (await lines.receive_until(b"\n", 1000)).decode().split()
                remote.add(key)
        progress(f"[{backend}] pool: SIGKILL of a node running {len(remote)} jobs")
        process.send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        with anyio.fail_after(FAILOVER_TTL * 10):
            while not remote <= survivor.running:
                await survivor.changed.wait()
                survivor.changed = anyio.Event()
        elapsed = time.perf_counter() - killed
        await process.wait()
        await node.shutdown()
    return [
        Result(
            NAME,
            f"failover after SIGKILL (worker_ttl={FAILOVER_TTL}s)",
            backend,
            elapsed * 1000,
            "ms",
            {"moved_jobs": len(remote), "ratio_to_ttl": round(elapsed / FAILOVER_TTL, 2)},
        )
    ]
