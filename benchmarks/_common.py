"""What every scenario shares: result rows, timing helpers, percentiles."""

from __future__ import annotations

import math
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs

from pulse_trio import Client as Client  # what scenarios receive (standalone or cluster)


@attrs.frozen
class Result:
    """One measured number of one scenario on one backend.

    Attributes:
        scenario: ``rmap`` or ``streaming``.
        metric: What was measured, e.g. ``get() calls/s``.
        backend: ``trio`` or ``asyncio``.
        value: The number (median of the runs for throughputs).
        unit: ``ops/s``, ``events/s``, ``ms``, ``x``.
        detail: Samples, runs, spread: everything needed to judge the number.
    """

    scenario: str
    metric: str
    backend: str
    value: float
    unit: str
    detail: dict[str, Any] = attrs.field(factory=dict)


def unique_name(prefix: str) -> str:
    """A name no other run uses (benchmarks never flush a server they were given)."""
    return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"


def progress(message: str) -> None:
    """One progress line on stderr (stdout carries the results table)."""
    print(f"  .. {message}", file=sys.stderr, flush=True)


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0 < q <= 1) of already sorted samples."""
    if not sorted_samples:
        raise ValueError("percentile of no samples")
    rank = max(1, math.ceil(q * len(sorted_samples)))
    return sorted_samples[rank - 1]


def latency_results(
    scenario: str, metric: str, backend: str, samples_s: Sequence[float], **detail: Any
) -> list[Result]:
    """p50 and p99 rows (in milliseconds) for latency samples given in seconds."""
    ordered = sorted(s * 1000.0 for s in samples_s)
    common = {
        "samples": len(ordered),
        "min_ms": round(ordered[0], 4),
        "mean_ms": round(statistics.fmean(ordered), 4),
        "max_ms": round(ordered[-1], 4),
        **detail,
    }
    return [
        Result(scenario, f"{metric} p50", backend, percentile(ordered, 0.50), "ms", common),
        Result(scenario, f"{metric} p99", backend, percentile(ordered, 0.99), "ms", common),
    ]


def throughput_result(
    scenario: str,
    metric: str,
    backend: str,
    operations: int,
    durations_s: Sequence[float],
    unit: str = "ops/s",
    **detail: Any,
) -> Result:
    """A throughput row: the median over the runs, with best and worst in ``detail``."""
    rates = sorted(operations / d for d in durations_s)
    return Result(
        scenario,
        metric,
        backend,
        statistics.median(rates),
        unit,
        {
            "operations_per_run": operations,
            "runs": len(rates),
            "best": round(rates[-1], 1),
            "worst": round(rates[0], 1),
            **detail,
        },
    )


def time_sync_loop(body: Callable[[], None], runs: int) -> list[float]:
    """Run ``body`` ``runs`` times; return each run's wall time in seconds."""
    durations = []
    for _ in range(runs):
        started = time.perf_counter()
        body()
        durations.append(time.perf_counter() - started)
    return durations


async def time_async_loop(body: Callable[[], Awaitable[None]], runs: int) -> list[float]:
    """Await ``body()`` ``runs`` times; return each run's wall time in seconds."""
    durations = []
    for _ in range(runs):
        started = time.perf_counter()
        await body()
        durations.append(time.perf_counter() - started)
    return durations
