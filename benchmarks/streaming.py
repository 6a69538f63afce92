"""Streams: add throughput, sink consume+ack throughput, reader end-to-end latency.

Measures, on the backend it runs under (SPEC section 4 API only):

- ``stream.add events/s``: sequential :meth:`~pulse_trio.streaming.Stream.add` calls (one
  round trip each), on a stream with the default ``max_len`` (trimming included).
- ``stream.add_many events/s``: batches of :data:`BATCH_SIZE` events, one round trip each.
- ``sink consume+ack events/s``: :data:`SINK_EVENTS` events already in the stream, consumed by
  two instances of one sink (``start=OLDEST``) in two tasks, each event acked on its own
  (``await sink.ack(event)``); from both instances open until every event is acked.
- ``reader end-to-end latency``: a producer task adds one event every 1/:data:`E2E_RATE`
  seconds (paced with ``sleep_until``, no drift); a reader opened at NEWEST receives them;
  latency = receive time - the ``perf_counter`` stamp in the payload (same process).
"""

from __future__ import annotations

import contextlib
import struct
import time

import anyio

from pulse_trio import streaming

from ._common import (
    Client,
    Result,
    latency_results,
    progress,
    throughput_result,
    time_async_loop,
    unique_name,
)

NAME = "streaming"
#: Sequential adds per timed run, and untimed ones before.
ADD_EVENTS = 2_000
ADD_WARMUP_EVENTS = 200
#: Events per ``add_many`` call, calls per timed run, untimed calls before.
BATCH_SIZE = 100
ADD_MANY_BATCHES = 50
ADD_MANY_WARMUP_BATCHES = 5
#: Timed runs of each add measurement (the median is reported).
RUNS = 3
#: Events consumed by the two sink instances (after a warm-up of SINK_WARMUP_EVENTS).
SINK_EVENTS = 10_000
SINK_WARMUP_EVENTS = 1_000
#: Paced end-to-end run: events per second, measured events, untimed ones before.
E2E_RATE = 1_000
E2E_EVENTS = 3_000
E2E_WARMUP_EVENTS = 200
#: Upper bound for any one consuming phase, in seconds (a lost event fails the run).
PHASE_TIMEOUT = 120.0
PAYLOAD = b"x" * 64

#: Workload constants, written to the JSON results.
CONSTANTS = {
    "ADD_EVENTS": ADD_EVENTS,
    "ADD_WARMUP_EVENTS": ADD_WARMUP_EVENTS,
    "BATCH_SIZE": BATCH_SIZE,
    "ADD_MANY_BATCHES": ADD_MANY_BATCHES,
    "ADD_MANY_WARMUP_BATCHES": ADD_MANY_WARMUP_BATCHES,
    "RUNS": RUNS,
    "SINK_EVENTS": SINK_EVENTS,
    "SINK_WARMUP_EVENTS": SINK_WARMUP_EVENTS,
    "E2E_RATE": E2E_RATE,
    "E2E_EVENTS": E2E_EVENTS,
    "E2E_WARMUP_EVENTS": E2E_WARMUP_EVENTS,
    "PAYLOAD_BYTES": len(PAYLOAD),
}


async def run(client: Client, backend: str) -> list[Result]:
    """Run every streaming measurement on the current backend and return the rows."""
    results: list[Result] = []
    results += await _add(client, backend)
    results += await _add_many(client, backend)
    results += await _sink(client, backend)
    results += await _end_to_end(client, backend)
    return results


async def _add(client: Client, backend: str) -> list[Result]:
    stream = streaming.Stream(client, unique_name("add"))
    try:

        async def loop(count: int = ADD_EVENTS) -> None:
            for _ in range(count):
                await stream.add("bench", PAYLOAD)

        progress(f"[{backend}] streaming: {RUNS} x {ADD_EVENTS} sequential stream.add")
        await loop(ADD_WARMUP_EVENTS)
        durations = await time_async_loop(loop, RUNS)
    finally:
        await stream.destroy()
    return [
        throughput_result(
            NAME,
            "stream.add events/s (sequential)",
            backend,
            ADD_EVENTS,
            durations,
            "events/s",
            max_len=stream.max_len,
        )
    ]


async def _add_many(client: Client, backend: str) -> list[Result]:
    stream = streaming.Stream(client, unique_name("add-many"))
    batch = [("bench", PAYLOAD)] * BATCH_SIZE
    try:

        async def loop(count: int = ADD_MANY_BATCHES) -> None:
            for _ in range(count):
                await stream.add_many(batch)

        progress(
            f"[{backend}] streaming: {RUNS} x {ADD_MANY_BATCHES} stream.add_many of {BATCH_SIZE}"
        )
        await loop(ADD_MANY_WARMUP_BATCHES)
        durations = await time_async_loop(loop, RUNS)
    finally:
        await stream.destroy()
    return [
        throughput_result(
            NAME,
            f"stream.add_many events/s (batches of {BATCH_SIZE})",
            backend,
            ADD_MANY_BATCHES * BATCH_SIZE,
            durations,
            "events/s",
            max_len=stream.max_len,
        )
    ]


async def fill(stream: streaming.Stream, count: int) -> None:
    """Add ``count`` events to ``stream`` in batches of :data:`BATCH_SIZE`."""
    for first in range(0, count, BATCH_SIZE):
        await stream.add_many([("bench", PAYLOAD)] * min(BATCH_SIZE, count - first))


async def _consume_with_two_sinks(
    stream: streaming.Stream, sink_name: str, count: int
) -> tuple[float, list[int], int]:
    """Consume ``count`` events with two instances; return (seconds, per instance, duplicates)."""
    return await consume_with_sinks(stream, sink_name, count)


async def consume_with_sinks(
    stream: streaming.Stream,
    sink_name: str,
    count: int,
    instances: int = 2,
    nowait: bool = False,
) -> tuple[float, list[int], int]:
    """Consume ``count`` events already in ``stream`` with ``instances`` instances of one sink.

    Each event is acked on its own: ``await sink.ack(event)``, or ``sink.ack_nowait(event)``
    when ``nowait``. Returns (seconds from all instances open until every event was seen,
    events per instance, duplicates).
    """
    seen: set[str] = set()
    per_instance = [0] * instances
    duplicates = 0
    done = anyio.Event()

    async def consume(sink: streaming.Sink, index: int) -> None:
        nonlocal duplicates
        async for event in sink:
            if nowait:
                sink.ack_nowait(event)
            else:
                await sink.ack(event)
            per_instance[index] += 1
            if event.id in seen:
                duplicates += 1
            seen.add(event.id)
            if len(seen) >= count:
                done.set()

    with anyio.fail_after(PHASE_TIMEOUT):
        async with contextlib.AsyncExitStack() as stack:
            sinks = [
                await stack.enter_async_context(stream.open_sink(sink_name, start=streaming.OLDEST))
                for _ in range(instances)
            ]
            tg = await stack.enter_async_context(anyio.create_task_group())
            started = time.perf_counter()
            for index, sink in enumerate(sinks):
                tg.start_soon(consume, sink, index)
            await done.wait()
            elapsed = time.perf_counter() - started
            tg.cancel_scope.cancel()
    return elapsed, per_instance, duplicates


async def _sink(client: Client, backend: str) -> list[Result]:
    warmup = streaming.Stream(client, unique_name("sink-warmup"), max_len=0)
    stream = streaming.Stream(client, unique_name("sink"), max_len=0)
    try:
        progress(f"[{backend}] streaming: sink warm-up ({SINK_WARMUP_EVENTS} events)")
        await fill(warmup, SINK_WARMUP_EVENTS)
        await _consume_with_two_sinks(warmup, "bench-warmup", SINK_WARMUP_EVENTS)
        progress(f"[{backend}] streaming: {SINK_EVENTS} events through two sink instances")
        await fill(stream, SINK_EVENTS)
        elapsed, per_instance, duplicates = await _consume_with_two_sinks(
            stream, "bench", SINK_EVENTS
        )
    finally:
        await warmup.destroy()
        await stream.destroy()
    return [
        throughput_result(
            NAME,
            "sink consume+ack events/s (2 instances)",
            backend,
            SINK_EVENTS,
            [elapsed],
            "events/s",
            per_instance=per_instance,
            duplicates=duplicates,
        )
    ]


async def _end_to_end(client: Client, backend: str) -> list[Result]:
    stream = streaming.Stream(client, unique_name("e2e"))
    total = E2E_WARMUP_EVENTS + E2E_EVENTS
    interval = 1.0 / E2E_RATE
    samples: list[float] = []
    produced_in = 0.0

    async def produce() -> None:
        nonlocal produced_in
        started = time.perf_counter()
        deadline = anyio.current_time()
        for _ in range(total):
            await anyio.sleep_until(deadline)
            await stream.add("tick", struct.pack("<d", time.perf_counter()))
            deadline += interval
        produced_in = time.perf_counter() - started

    progress(f"[{backend}] streaming: {total} events paced at {E2E_RATE}/s through a reader")
    try:
        with anyio.fail_after(PHASE_TIMEOUT):
            async with (
                stream.open_reader(start=streaming.NEWEST) as reader,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(produce)
                received = 0
                async for event in reader:
                    latency = time.perf_counter() - struct.unpack("<d", event.payload)[0]
                    received += 1
                    if received > E2E_WARMUP_EVENTS:
                        samples.append(latency)
                    if received == total:
                        break
    finally:
        await stream.destroy()
    return latency_results(
        NAME,
        f"reader end-to-end latency @{E2E_RATE}/s",
        backend,
        samples,
        achieved_rate=round(total / produced_in, 1),
    )
