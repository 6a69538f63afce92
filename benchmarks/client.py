"""Redis round trips: pulse-trio's transport against coredis, redis-py and redis-benchmark.

For each command (``XADD`` of a :data:`PAYLOAD`-byte field to one stream, and ``PING``),
measures in one process run:

- ``sequential``: one task, one ``await`` after another (one round trip each);
- ``N tasks``: :data:`TASKS` tasks sharing one client, :data:`CONCURRENT_OPS` commands in all.

Clients: ``pulse_trio._redis`` (``open_client``), coredis (``coredis.Redis``, the client
pulse-trio uses today), redis-py's asyncio client with hiredis (asyncio backend only: redis-py
does not run on Trio), and the server's own ``redis-benchmark`` (C, ``-c 1`` for sequential and
``-c TASKS`` connections for concurrent; the same numbers are reported on both backends' rows).
The ``speed-up`` rows divide the transport's rate by coredis's, measured in the same run; the
clients' timed runs are interleaved so that load from elsewhere on the machine hits them alike.
"""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import statistics
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread

from pulse_trio._redis import open_client

from ._common import Result, progress, throughput_result, time_async_loop, unique_name

NAME = "client"
#: Commands per sequential timed run, and untimed ones before.
SEQUENTIAL_OPS = 3_000
WARMUP_OPS = 300
#: Concurrent tasks, and commands per concurrent timed run (split among them).
TASKS = 64
CONCURRENT_OPS = 19_200
#: Timed runs of each measurement, interleaved across clients (the median is reported).
RUNS = 5
#: Requests per redis-benchmark measurement, and its time bound in seconds.
REDIS_BENCHMARK_OPS = 20_000
REDIS_BENCHMARK_TIMEOUT = 60.0
PAYLOAD = b"x" * 64

CONSTANTS = {
    "SEQUENTIAL_OPS": SEQUENTIAL_OPS,
    "WARMUP_OPS": WARMUP_OPS,
    "TASKS": TASKS,
    "CONCURRENT_OPS": CONCURRENT_OPS,
    "RUNS": RUNS,
    "REDIS_BENCHMARK_OPS": REDIS_BENCHMARK_OPS,
    "PAYLOAD_BYTES": len(PAYLOAD),
}

Call = Callable[[], Awaitable[Any]]


async def _measure(
    backend: str, command: str, calls: dict[str, Call], results: list[Result]
) -> dict[str, dict[str, float]]:
    """Time each client's ``call`` sequentially and from TASKS tasks, the clients' runs
    interleaved (run 1 of every client, then run 2...) so that a load spike on the shared
    machine hits every client alike; append rows; return the medians by client and mode."""

    def sequential(call: Call) -> Callable[[], Awaitable[None]]:
        async def body() -> None:
            for _ in range(SEQUENTIAL_OPS):
                await call()

        return body

    def concurrent(call: Call) -> Callable[[], Awaitable[None]]:
        async def worker() -> None:
            for _ in range(CONCURRENT_OPS // TASKS):
                await call()

        async def body() -> None:
            async with anyio.create_task_group() as tg:
                for _ in range(TASKS):
                    tg.start_soon(worker)

        return body

    progress(f"[{backend}] client: {command}, {RUNS} interleaved runs of {', '.join(calls)}")
    for call in calls.values():
        for _ in range(WARMUP_OPS):
            await call()
    medians: dict[str, dict[str, float]] = {label: {} for label in calls}
    for mode, make, operations in (
        ("sequential", sequential, SEQUENTIAL_OPS),
        (f"{TASKS} tasks", concurrent, CONCURRENT_OPS // TASKS * TASKS),
    ):
        durations: dict[str, list[float]] = {label: [] for label in calls}
        for _ in range(RUNS):
            for label, call in calls.items():
                durations[label] += await time_async_loop(make(call), 1)
        for label in calls:
            row = throughput_result(
                NAME, f"{command} {mode}: {label}", backend, operations, durations[label]
            )
            results.append(row)
            medians[label][mode] = row.value
    return medians


def _redis_benchmark(url: str, args: list[str], clients: int) -> float | None:
    """Requests/s reported by ``redis-benchmark`` (None if it is missing or fails)."""
    binary = shutil.which("redis-benchmark")
    parts = urlsplit(url)
    if binary is None or parts.scheme != "redis" or parts.hostname is None:
        return None
    command = [binary, "-h", parts.hostname, "-p", str(parts.port or 6379)]
    command += ["-n", str(REDIS_BENCHMARK_OPS), "-c", str(clients), "--csv", *args]
    try:
        out = subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=REDIS_BENCHMARK_TIMEOUT
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = list(csv.DictReader(io.StringIO(out)))
    return statistics.median(float(r["rps"]) for r in rows) if rows else None


async def run_url(url: str, backend: str) -> list[Result]:
    """Run every client measurement against ``url`` on the current backend."""
    import coredis  # optional (the dev extra): imported here so the runner starts without it

    results: list[Result] = []
    stream = unique_name("client")
    xadd = ("XADD", stream, "MAXLEN", "~", 1000, "*", "p", PAYLOAD)
    try:
        async with (
            open_client(url) as transport,
            coredis.Redis.from_url(url, decode_responses=False) as cd,
            contextlib.AsyncExitStack() as stack,
        ):
            xadds: dict[str, Call] = {
                "pulse_trio Client": lambda: transport.execute(*xadd),
                "coredis": lambda: cd.xadd(
                    stream,
                    {"p": PAYLOAD},
                    trim_strategy=coredis.PureToken.MAXLEN,
                    trim_operator=coredis.PureToken.APPROXIMATELY,
                    threshold=1000,
                ),
            }
            pings: dict[str, Call] = {
                "pulse_trio Client": lambda: transport.execute("PING"),
                "coredis": cd.ping,
            }
            if backend == "asyncio":  # redis-py does not run on Trio
                import redis.asyncio

                rp = redis.asyncio.Redis.from_url(url)
                stack.push_async_callback(rp.aclose)
                xadds["redis-py asyncio"] = lambda: rp.xadd(
                    stream, {"p": PAYLOAD}, maxlen=1000, approximate=True
                )
                pings["redis-py asyncio"] = rp.ping
            rates = {
                "XADD": await _measure(backend, "XADD", xadds, results),
                "PING": await _measure(backend, "PING", pings, results),
            }
        progress(f"[{backend}] client: redis-benchmark")
        benchmark_args = {
            "XADD": [a.decode() if isinstance(a, bytes) else str(a) for a in xadd],
            "PING": ["PING"],
        }
        for command, cli_args in benchmark_args.items():
            for clients, label in ((1, "sequential"), (TASKS, f"{TASKS} tasks")):
                rps = await anyio.to_thread.run_sync(_redis_benchmark, url, cli_args, clients)
                if rps is not None:
                    results.append(
                        Result(
                            NAME,
                            f"{command} {label}: redis-benchmark (C, {clients} conn.)",
                            backend,
                            rps,
                            "ops/s",
                            {"requests": REDIS_BENCHMARK_OPS, "connections": clients},
                        )
                    )
    finally:
        async with open_client(url) as cleanup:
            await cleanup.execute("DEL", stream)
    for command, by_client in rates.items():
        for mode in ("sequential", f"{TASKS} tasks"):
            ratio = by_client["pulse_trio Client"][mode] / by_client["coredis"][mode]
            results.append(
                Result(NAME, f"{command} {mode}: speed-up vs coredis", backend, ratio, "x")
            )
    return results
