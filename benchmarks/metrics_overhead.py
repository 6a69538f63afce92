"""The cost of the OpenTelemetry metrics on the hot paths: an A/B in child processes.

Conditions (each a fresh ``python`` process, so the module-level switch applies):

- ``off``: ``PULSE_TRIO_METRICS=0``, the code path of an install without the ``otel`` extra
  (cells are bumped, nothing is registered, no histogram, no gauge task);
- ``api``: the ``otel`` extra installed and no SDK configured (the API's proxy instruments);
- ``sdk``: an SDK ``MeterProvider`` with an in-memory reader that never collects (the
  callbacks never run; the histograms record).

Each child times, on Trio, ``Stream.add`` one awaited call after another and a sink's
``consume + ack`` of as many events, after a warm-up, and prints the rates as JSON. The
parent alternates the conditions round after round (the machine may be loaded) and prints
the median rate of each. Usage::

    python -m benchmarks.metrics_overhead [--rounds 5] [--events 2000] [--redis-url URL]

Without ``--redis-url`` it starts a throwaway embedded server. Keys are named ``bench-*``
and deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence

import anyio

CONDITIONS = ("off", "api", "sdk")


async def _child(url: str, events: int) -> dict[str, float]:
    import pulse_trio
    from pulse_trio import streaming

    async with pulse_trio.connect(url) as client:
        name = f"bench-otel-{uuid.uuid4().hex[:8]}"
        stream = streaming.Stream(client, name, max_len=0)
        try:
            for _ in range(200):  # warm-up
                await stream.add("warm", b"x" * 64)
            began, cpu = time.perf_counter(), time.process_time()
            for _ in range(events):
                await stream.add("e", b"x" * 64)
            add_rate = events / (time.perf_counter() - began)
            add_cpu = (time.process_time() - cpu) / events * 1e6
            async with stream.open_sink("bench", start=streaming.OLDEST) as sink:
                total = events + 200
                began, cpu = time.perf_counter(), time.process_time()
                for _ in range(total):
                    event = await sink.__anext__()
                    await sink.ack(event)
                sink_rate = total / (time.perf_counter() - began)
                sink_cpu = (time.process_time() - cpu) / total * 1e6
        finally:
            await stream.destroy()
    return {"add": add_rate, "consume_ack": sink_rate, "add_cpu": add_cpu, "sink_cpu": sink_cpu}


def _run_child(condition: str, url: str, events: int) -> dict[str, float]:
    env = dict(os.environ)
    env["PULSE_TRIO_METRICS"] = "0" if condition == "off" else "1"
    command = [sys.executable, "-m", "benchmarks.metrics_overhead", "--child", condition]
    command += ["--redis-url", url, "--events", str(events)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_overhead")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the three conditions")
    parser.add_argument("--events", type=int, default=2000, help="events per measurement")
    parser.add_argument("--redis-url", default=os.environ.get("PULSE_REDIS_URL"))
    parser.add_argument("--child", choices=CONDITIONS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the A/B (or one child measurement with ``--child``)."""
    args = _parse(argv)
    if args.child is not None:
        if args.child == "sdk":
            from opentelemetry import metrics
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader

            metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
        print(json.dumps(anyio.run(_child, args.redis_url, args.events, backend="trio")))
        return 0
    if args.redis_url:
        return _compare(args, args.redis_url)
    from pulse_trio.testing import EmbeddedServer

    async def with_server() -> int:
        async with EmbeddedServer() as server:
            return await anyio.to_thread.run_sync(_compare, args, server.url)

    return anyio.run(with_server, backend="trio")


def _compare(args: argparse.Namespace, url: str) -> int:
    rates: dict[str, dict[str, list[float]]] = {
        c: {"add": [], "consume_ack": [], "add_cpu": [], "sink_cpu": []} for c in CONDITIONS
    }
    for round_index in range(args.rounds):
        order = CONDITIONS if round_index % 2 == 0 else tuple(reversed(CONDITIONS))
        for condition in order:
            result = _run_child(condition, url, args.events)
            for metric, value in result.items():
                rates[condition][metric].append(value)
            print(f"  .. round {round_index + 1} {condition}: {result}", file=sys.stderr)

    def cell(condition: str, metric: str, fmt: str) -> str:
        values = rates[condition][metric]
        return f"{statistics.median(values):{fmt}} ({min(values):{fmt}} to {max(values):{fmt}})"

    print(
        "| condition | stream.add (events/s) | consume+ack (events/s) "
        "| add CPU (µs/event) | consume+ack CPU (µs/event) |"
    )
    print("|---|---|---|---|---|")
    for condition in CONDITIONS:
        print(
            f"| {condition} | {cell(condition, 'add', ',.0f')} "
            f"| {cell(condition, 'consume_ack', ',.0f')} "
            f"| {cell(condition, 'add_cpu', '.0f')} | {cell(condition, 'sink_cpu', '.0f')} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
