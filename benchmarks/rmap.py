"""Replicated map: local reads against a dict and a Redis round trip; write-to-replica latency.

Measures, on the backend it runs under:

- ``get() calls/s``: :meth:`pulse_trio.rmap.Map.get` on a map of :data:`MAP_KEYS` keys,
  side by side with the same lookups on a plain ``dict`` and with ``HGET`` round trips on the
  map's own hash (what a process without a local replica would do), plus the two ratios.
- ``set -> visible on replica B``: two replicas of one map in one process; ``set`` on A, then
  the time until ``B.get`` returns the new value (B is woken by its subscription, so the number
  includes the Lua script, the PUBLISH, B's pub/sub read and its apply step).
"""

from __future__ import annotations

import time

from pulse_trio import rmap

from ._common import (
    Client,
    Result,
    latency_results,
    progress,
    throughput_result,
    time_async_loop,
    time_sync_loop,
    unique_name,
)

NAME = "rmap"
#: Keys in the benchmarked map.
MAP_KEYS = 100
#: Local lookups per timed run (``Map.get`` and ``dict.get``).
LOCAL_CALLS = 500_000
#: Untimed local lookups before the timed runs.
LOCAL_WARMUP_CALLS = 50_000
#: HGET round trips per timed run.
HGET_CALLS = 2_000
#: Untimed HGETs before the timed runs.
HGET_WARMUP_CALLS = 200
#: Timed runs of each throughput measurement (the median is reported).
RUNS = 5
#: set -> visible-on-B samples, and untimed ones before them.
LATENCY_SAMPLES = 3_000
LATENCY_WARMUP_SAMPLES = 200

#: Workload constants, written to the JSON results.
CONSTANTS = {
    "MAP_KEYS": MAP_KEYS,
    "LOCAL_CALLS": LOCAL_CALLS,
    "LOCAL_WARMUP_CALLS": LOCAL_WARMUP_CALLS,
    "HGET_CALLS": HGET_CALLS,
    "HGET_WARMUP_CALLS": HGET_WARMUP_CALLS,
    "RUNS": RUNS,
    "LATENCY_SAMPLES": LATENCY_SAMPLES,
    "LATENCY_WARMUP_SAMPLES": LATENCY_WARMUP_SAMPLES,
}


def _hash_key(name: str) -> str:
    # The map's Redis hash, as pinned by the wire format (SPEC section 3).
    return f"map:{name}:content"


async def run(client: Client, backend: str) -> list[Result]:
    """Run every rmap measurement on the current backend and return the rows."""
    name = unique_name("rmap")
    keys = [f"key-{i}" for i in range(MAP_KEYS)]
    results: list[Result] = []
    async with rmap.join(client, name) as a, rmap.join(client, name) as b:
        try:
            progress(f"[{backend}] rmap: loading {MAP_KEYS} keys")
            for key in keys:
                await a.set(key, f"value of {key}")
            await a.set_and_wait(keys[-1], f"value of {keys[-1]}")
            results += _local_reads(a, keys, backend)
            results += await _hget(client, name, keys, backend)
            local = next(r for r in results if r.metric == "get() calls/s")
            plain = next(r for r in results if r.metric == "dict.get() calls/s (baseline)")
            hget = next(r for r in results if r.metric == "HGET round trips/s (baseline)")
            results.append(
                Result(NAME, "get() speed-up vs HGET", backend, local.value / hget.value, "x")
            )
            results.append(
                Result(
                    NAME, "dict.get() speed-up vs get()", backend, plain.value / local.value, "x"
                )
            )
            results += await _replication_latency(a, b, backend)
        finally:
            await a.destroy()
    return results


def _local_reads(m: rmap.Map, keys: list[str], backend: str) -> list[Result]:
    lookups = (keys * (LOCAL_CALLS // len(keys) + 1))[:LOCAL_CALLS]
    warmup = lookups[:LOCAL_WARMUP_CALLS]
    plain = m.map()
    assert all(m.get(k) == plain[k] for k in keys), "replica is not loaded"

    map_get = m.get
    dict_get = plain.get

    def map_loop(items: list[str] = lookups) -> None:
        for key in items:
            map_get(key)

    def dict_loop(items: list[str] = lookups) -> None:
        for key in items:
            dict_get(key)

    progress(f"[{backend}] rmap: {RUNS} x {LOCAL_CALLS} local get() and dict.get() calls")
    map_loop(warmup)
    dict_loop(warmup)
    # Interleaved runs: a noisy neighbour slows both loops alike, which keeps the ratio honest.
    map_durations: list[float] = []
    dict_durations: list[float] = []
    for _ in range(RUNS):
        map_durations += time_sync_loop(map_loop, 1)
        dict_durations += time_sync_loop(dict_loop, 1)
    return [
        throughput_result(NAME, "get() calls/s", backend, LOCAL_CALLS, map_durations),
        throughput_result(
            NAME, "dict.get() calls/s (baseline)", backend, LOCAL_CALLS, dict_durations
        ),
    ]


async def _hget(
    client: Client,
    name: str,
    keys: list[str],
    backend: str,
) -> list[Result]:
    hash_key = _hash_key(name)
    assert await client.execute("HGET", hash_key, keys[0]) == f"value of {keys[0]}".encode()

    async def loop(count: int = HGET_CALLS) -> None:
        for i in range(count):
            await client.execute("HGET", hash_key, keys[i % len(keys)])

    progress(f"[{backend}] rmap: {RUNS} x {HGET_CALLS} sequential HGET round trips")
    await loop(HGET_WARMUP_CALLS)
    durations = await time_async_loop(loop, RUNS)
    return [
        throughput_result(NAME, "HGET round trips/s (baseline)", backend, HGET_CALLS, durations)
    ]


async def _replication_latency(a: rmap.Map, b: rmap.Map, backend: str) -> list[Result]:
    progress(f"[{backend}] rmap: {LATENCY_SAMPLES} set-on-A -> visible-on-B samples")
    samples = await propagation_samples(a, b, LATENCY_SAMPLES, LATENCY_WARMUP_SAMPLES)
    return latency_results(NAME, "set -> visible on replica B", backend, samples)


async def propagation_samples(a: rmap.Map, b: rmap.Map, count: int, warmup: int) -> list[float]:
    """Seconds from ``a.set`` until replica ``b`` returns the value, ``count`` samples."""
    samples: list[float] = []
    async with b.subscribe() as changes:
        for i in range(warmup + count):
            value = f"v{i}"
            started = time.perf_counter()
            await a.set("latency", value)
            # A notification left over from the previous sample may be pending: the loop
            # re-checks the value after each one, so it only ends on this sample's write.
            while b.get("latency") != value:
                await anext(changes)
            if i >= warmup:
                samples.append(time.perf_counter() - started)
    return samples
