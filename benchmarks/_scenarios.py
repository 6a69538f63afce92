"""The scenarios of the side-by-side runner and each system's measurement of them.

Each ``_measure_*`` function runs one round of one system and returns a
:class:`~benchmarks._runner.Measurement`; pulse-trio rounds run in their own ``anyio.run``
(Trio unless ``--backend asyncio``), the Python queues on asyncio, go-pulse as a
``benchmarks/go`` subprocess. Counts come in three sizes (full, ``--quick``, smoke) through
:meth:`Env.n`. See benchmarks/README.md for what each scenario measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import anyio
import attrs
from anyio.streams.buffered import BufferedByteReceiveStream

import pulse_trio
from pulse_trio import pool, rmap, streaming

from . import _queues
from . import client as client_scenario
from . import pool as pool_scenario
from . import rmap as rmap_scenario
from . import streaming as streaming_scenario
from ._common import percentile, unique_name
from ._runner import Case, Env, Measurement
from ._systems import REPO

PAYLOAD = b"x" * 64
#: Workers of the pool node (and concurrency of every queue's worker).
WORKERS = _queues.CONCURRENCY
#: Concurrent producers of the "concurrent" job and add cases.
PRODUCERS = 64
#: Paced job rate of ``jobs.latency``, and event rate of ``stream.latency``.
JOB_RATE = 500
EVENT_RATE = 1_000
#: Bound on any one wait for jobs or events, in seconds.
TIMEOUT = 120.0


def _job_systems() -> tuple[str, ...]:
    return ("pulse-trio", "go-pulse", "streaq", "taskiq", "saq", "arq")


def _latency(values: dict[str, float], samples_s: list[float]) -> Measurement:
    ordered = sorted(s * 1000.0 for s in samples_s)
    values["p50"] = percentile(ordered, 0.50)
    values["p99"] = percentile(ordered, 0.99)
    return Measurement(values, samples_ms=[s * 1000.0 for s in samples_s])


def _run_pulse(
    env: Env, fn: Callable[..., Coroutine[Any, Any, Measurement]], *args: Any
) -> Measurement:
    async def main() -> Measurement:
        async with pulse_trio.connect(env.url) as client:
            return await fn(client, *args)

    return anyio.run(main, backend=env.backend)


def _addr(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.hostname is None:
        raise ValueError(f"go-pulse needs a redis:// TCP server, not {url}")
    return f"{parts.hostname}:{parts.port or 6379}"


def _run_go(env: Env, command: str, *args: object) -> Measurement:
    argv = [str(env.systems.go_binary), command, "--redis", _addr(env.url)]
    name = unique_name(f"go-{command}")
    argv += ["--name", name, *(str(a) for a in args)]
    cleanup = [name]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=TIMEOUT * 2, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"pulse-bench {command} failed: {done.stderr.strip()[-500:]}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        cleanup += report.get("cleanup") or []
    finally:
        # The program leaves its pool (and a sink's consumer map) behind: see benchmarks/go.
        for part in cleanup:
            anyio.run(_delete_keys, env.url, f"*{part}*", backend="trio")
    values = {
        {"jobs_per_s": "jobs/s", "events_per_s": "events/s", "ops_per_s": "ops/s"}.get(k, k): v
        for k, v in report["values"].items()
    }
    values = {k.removesuffix("_ms"): v for k, v in values.items()}
    extra: dict[str, Any] = {}
    if command in ("jobs", "failover"):
        extra["stalls"] = report.get("stalls", 0)
    if "moved_jobs" in values:
        extra["moved_jobs"] = int(values.pop("moved_jobs"))
    return Measurement(values, samples_ms=report.get("samples_ms") or [], extra=extra)


async def _delete_keys(url: str, pattern: str) -> None:
    async with pulse_trio.connect(url) as client:
        await _delete_matching(client, pattern)


async def _delete_keys_with(client: pulse_trio.Client, name: str) -> None:
    """Delete every key whose name holds ``name`` (a run's unique ``bench-…`` name)."""
    await _delete_matching(client, f"*{name}*")


async def _delete_matching(client: pulse_trio.Client, pattern: str) -> None:
    # Every primary's keys (a cluster's too), deleted one by one: in a cluster the keys of a
    # run hash to different slots, and one DEL of several would fail with CROSSSLOT.
    # Sixty-four deleting tasks: their DELs share the connection's writes.
    keys = await client.scan_keys(pattern)

    async def delete(share: list[bytes]) -> None:
        for key in share:
            await client.execute("DEL", key)

    async with anyio.create_task_group() as tg:
        for first in range(min(64, len(keys))):
            tg.start_soon(delete, keys[first::64])


# ---------------------------------------------------------------- jobs


@contextlib.asynccontextmanager
async def _second_process(url: str, name: str, workers: int) -> AsyncIterator[None]:
    """A pool node with ``workers`` no-op workers in a child process (``_pool_worker``)."""
    command = [sys.executable, "-m", "benchmarks._pool_worker", url, name, "30", str(workers)]
    async with await anyio.open_process([*command, "quiet"]) as process:
        assert process.stdout is not None
        with anyio.fail_after(30):
            line = await process.stdout.receive()
            if not line.startswith(b"ready"):
                raise RuntimeError(f"pool worker process said {line!r}")
        try:
            yield
        finally:
            process.kill()


async def _pulse_jobs(
    client: pulse_trio.Client,
    jobs: int,
    warmup: int,
    producers: int,
    processes: int,
    workers: int,
    rate: float,
) -> Measurement:
    name = unique_name("jobs")
    async with contextlib.AsyncExitStack() as stack:
        node = await stack.enter_async_context(
            pool.open_node(client, name, max_queued_jobs=jobs + warmup + 1)
        )
        local = workers if processes == 1 else workers - workers // 2
        if processes == 2:
            await stack.enter_async_context(_second_process(client.url, name, workers // 2))
        for _ in range(local):
            await node.add_worker(pool_scenario._NoOp())
        for i in range(warmup):
            await node.dispatch_job(f"w{i}", PAYLOAD)
        latencies: list[float] = []

        async def dispatch(key: str) -> None:
            before = time.perf_counter()
            await node.dispatch_job(key, PAYLOAD)
            latencies.append(time.perf_counter() - before)

        async def producer(first: int) -> None:
            for i in range(first, jobs, producers):
                await dispatch(f"j{i}")

        started = time.perf_counter()
        with anyio.fail_after(TIMEOUT):
            if rate:
                deadline = anyio.current_time()
                for i in range(jobs):
                    await anyio.sleep_until(deadline)
                    await dispatch(f"j{i}")
                    deadline += 1.0 / rate
            else:
                async with anyio.create_task_group() as tg:
                    for first in range(producers):
                        tg.start_soon(producer, first)
        elapsed = time.perf_counter() - started
        with anyio.move_on_after(30):
            await node.shutdown()
    if rate:
        return _latency({}, latencies)
    return Measurement({"jobs/s": jobs / elapsed})


@contextlib.asynccontextmanager
async def _queue_child(system: str, url: str, name: str, concurrency: int) -> AsyncIterator[None]:
    """A ``benchmarks._queue_worker`` child running ``system``'s worker on queue ``name``; the
    jobs it executes are added to :data:`_queues.TRACKER` as it reports them."""
    command = [sys.executable, "-m", "benchmarks._queue_worker", system, url, name]
    with tempfile.TemporaryFile() as errors:
        process = await anyio.open_process([*command, str(concurrency)], stderr=errors, cwd=REPO)
        try:
            assert process.stdout is not None
            lines = BufferedByteReceiveStream(process.stdout)
            try:
                with anyio.fail_after(60):
                    line = await lines.receive_until(b"\n", 4096)
            except (anyio.EndOfStream, anyio.IncompleteRead, TimeoutError):
                line = b""

            def said() -> str:
                errors.seek(0)
                return errors.read().decode(errors="replace").strip()[-500:]

            if line != b"ready":
                raise RuntimeError(f"{system} worker process did not start: {line!r} {said()}")

            async def count() -> None:
                try:
                    while True:
                        executed = await lines.receive_until(b"\n", 4096)
                        if executed.isdigit():
                            _queues.TRACKER.executed_elsewhere(int(executed))
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    # Not killed by us (that happens after this task is cancelled): it died.
                    raise RuntimeError(f"{system} worker process exited: {said()}") from None

            async with anyio.create_task_group() as tg:
                tg.start_soon(count)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            # Killed, not stopped: the measurement is over, and the runner deletes its keys.
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with anyio.CancelScope(shield=True):
                await process.aclose()


def _queue_jobs(
    system: str,
    env: Env,
    jobs: int,
    warmup: int,
    producers: int,
    rate: float,
    processes: int = 1,
) -> Measurement:
    result: list[Measurement] = []
    name = unique_name(system)
    # Split like pulse-trio's workers: half (rounded down) in the child, the rest here.
    elsewhere = _queues.CONCURRENCY // 2 if processes == 2 else 0

    async def main() -> None:
        tracker = _queues.TRACKER
        async with contextlib.AsyncExitStack() as stack:
            if elsewhere:
                await stack.enter_async_context(_queue_child(system, env.url, name, elsewhere))
            queue = await stack.enter_async_context(
                _queues.open_queue(system, env.url, name, _queues.CONCURRENCY - elsewhere)
            )
            with anyio.fail_after(TIMEOUT):
                tracker.expect(warmup)
                for _ in range(warmup):
                    await queue.enqueue(time.perf_counter())
                await tracker.reached.wait()
            tracker.expect(jobs)

            async def producer(first: int) -> None:
                for _ in range(first, jobs, producers):
                    await queue.enqueue(time.perf_counter())

            started = time.perf_counter()
            with anyio.fail_after(TIMEOUT):
                if rate:
                    deadline = anyio.current_time()
                    for _ in range(jobs):
                        await anyio.sleep_until(deadline)
                        await queue.enqueue(time.perf_counter())
                        deadline += 1.0 / rate
                else:
                    async with anyio.create_task_group() as tg:
                        for first in range(producers):
                            tg.start_soon(producer, first)
                await tracker.reached.wait()
            elapsed = time.perf_counter() - started
            if rate:
                result.append(_latency({}, tracker.latencies))
            else:
                extra = {"child_jobs": tracker.remote_count} if elsewhere else {}
                result.append(Measurement({"jobs/s": jobs / elapsed}, extra=extra))

    # The queues log their own shutdown at WARNING/ERROR (saq: "Some tasks did not finish",
    # then asyncio: "exception was never retrieved"); a benchmark's output has no use for it.
    quiet = [logging.getLogger(n) for n in ("asyncio", "saq", "taskiq", "streaq", "arq")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.CRITICAL)
    try:
        anyio.run(main, backend="asyncio")
    except (Exception, asyncio.CancelledError):
        # A queue's worker may fail while being torn down (cancelled mid-command); the
        # measurement was taken before that and stands.
        if not result:
            raise
        print(f"  ({system}: error while stopping its worker, ignored)", file=sys.stderr)
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
        # Every key a queue made holds its unique queue name; the queues leave some behind.
        anyio.run(_delete_keys, env.url, f"*{name}*", backend="trio")
    return result[0]


def _jobs_cases(env: Env) -> list[Case]:
    cases = []
    for processes in (1, 2):
        for producers in (1, PRODUCERS):
            params = {"producers": producers, "processes": processes, "workers": WORKERS}
            # The full run's sequential cases take 1,000 jobs, not 2,000: one at a time they
            # last 0.5-5 s per system already (arq's 0.5 s polling: 5 s), and the full run
            # must stay under 20 minutes on 2 cores (benchmarks/README.md, "Duration").
            jobs = env.n(2_000 if producers > 1 else 1_000, 400, 60)
            warmup = env.n(200 if producers > 1 else 100, 50, 10)

            def measure(
                system: str,
                env: Env,
                producers: int = producers,
                processes: int = processes,
                jobs: int = jobs,
                warmup: int = warmup,
            ) -> Measurement:
                if system == "pulse-trio":
                    return _run_pulse(
                        env, _pulse_jobs, jobs, warmup, producers, processes, WORKERS, 0
                    )
                if system == "go-pulse":
                    return _run_go(
                        env, "jobs", "--jobs", jobs, "--warmup", warmup,
                        "--workers", WORKERS, "--producers", producers,
                        "--processes", processes, "--addr", _addr(env.url),
                    )  # fmt: skip
                return _queue_jobs(system, env, jobs, warmup, producers, 0, processes)

            cases.append(
                Case(
                    "jobs.throughput",
                    params,
                    _job_systems(),
                    (("jobs/s", "jobs/s"),),
                    measure,
                    # --quick measures the 2-process cases once (after the warm-up round)
                    # to stay under 3 minutes with every queue in them.
                    rounds=env.n(2, 2 if processes == 1 else 1, 1),
                )
            )
    return cases


def _jobs_latency_cases(env: Env) -> list[Case]:
    jobs = env.n(2_000, 400, 40)
    warmup = env.n(200, 50, 5)

    def measure(system: str, env: Env) -> Measurement:
        if system == "pulse-trio":
            return _run_pulse(env, _pulse_jobs, jobs, warmup, 1, 1, WORKERS, JOB_RATE)
        if system == "go-pulse":
            return _run_go(
                env, "jobs", "--jobs", jobs, "--warmup", warmup,
                "--workers", WORKERS, "--rate", JOB_RATE,
            )  # fmt: skip
        return _queue_jobs(system, env, jobs, warmup, 1, JOB_RATE)

    return [
        Case(
            "jobs.latency",
            {"rate": JOB_RATE, "workers": WORKERS},
            _job_systems(),
            (("p50", "ms"), ("p99", "ms")),
            measure,
            rounds=env.n(2, 1, 1),
        )
    ]


# ---------------------------------------------------------------- streams


async def _pulse_add(
    client: pulse_trio.Client, events: int, warmup: int, batch: int
) -> Measurement:
    stream = streaming.Stream(client, unique_name("add"))
    try:
        items = [("bench", PAYLOAD)] * batch
        for _ in range(max(1, warmup // batch)):
            await stream.add_many(items) if batch > 1 else await stream.add("bench", PAYLOAD)
        started = time.perf_counter()
        if batch > 1:
            for _ in range(events // batch):
                await stream.add_many(items)
        else:
            for _ in range(events):
                await stream.add("bench", PAYLOAD)
        elapsed = time.perf_counter() - started
    finally:
        await stream.destroy()
    return Measurement({"events/s": (events // batch * batch) / elapsed})


def _raw_add(system: str, env: Env, events: int, warmup: int) -> Measurement:
    key = f"pulse:stream:{unique_name('raw')}"
    result: list[float] = []

    async def coredis_main() -> None:
        import coredis

        async with coredis.Redis.from_url(env.url, decode_responses=False) as cd:

            async def call() -> None:
                await cd.xadd(
                    key,
                    {"n": "bench", "p": PAYLOAD},
                    trim_strategy=coredis.PureToken.MAXLEN,
                    trim_operator=coredis.PureToken.APPROXIMATELY,
                    threshold=1000,
                )

            result.append(await _timed(call, events, warmup))
            await cd.delete([key])

    async def redis_py_main() -> None:
        import redis.asyncio

        rp = redis.asyncio.Redis.from_url(env.url)
        try:

            async def call() -> None:
                await rp.xadd(key, {"n": "bench", "p": PAYLOAD}, maxlen=1000, approximate=True)

            result.append(await _timed(call, events, warmup))
            await rp.delete(key)
        finally:
            await rp.aclose()

    if system == "coredis-raw":
        anyio.run(coredis_main, backend=env.backend)
    else:
        anyio.run(redis_py_main, backend="asyncio")
    return Measurement({"events/s": events / result[0]})


async def _timed(call: Callable[[], Coroutine[Any, Any, None]], count: int, warmup: int) -> float:
    for _ in range(warmup):
        await call()
    started = time.perf_counter()
    for _ in range(count):
        await call()
    return time.perf_counter() - started


def _redis_benchmark(env: Env, pipeline: int) -> Measurement:
    key = unique_name("rb")
    args = ["XADD", key, "MAXLEN", "~", "1000", "*", "n", "bench", "p", "x" * 64]
    if pipeline > 1:
        args = ["-P", str(pipeline), *args]
    try:
        rps = client_scenario._redis_benchmark(env.url, args, 1)
    finally:
        anyio.run(_delete_keys, env.url, key, backend="trio")
    if rps is None:
        raise RuntimeError("redis-benchmark failed (needs a redis:// TCP server)")
    return Measurement({"events/s": rps})


def _stream_add_cases(env: Env) -> list[Case]:
    events = env.n(3_000, 1_500, 100)
    warmup = env.n(300, 150, 10)

    def measure(system: str, env: Env) -> Measurement:
        if system == "pulse-trio":
            return _run_pulse(env, _pulse_add, events, warmup, 1)
        if system == "go-pulse":
            return _run_go(env, "add", "--events", events, "--warmup", warmup)
        if system == "redis-benchmark":
            return _redis_benchmark(env, 1)
        return _raw_add(system, env, events, warmup)

    batch = 100
    batches_events = env.n(10_000, 5_000, 500)

    def measure_many(system: str, env: Env) -> Measurement:
        if system == "pulse-trio":
            return _run_pulse(env, _pulse_add, batches_events, batch * 5, batch)
        return _redis_benchmark(env, batch)

    return [
        Case(
            "stream.add",
            {"mode": "sequential"},
            ("pulse-trio", "go-pulse", "coredis-raw", "redis-py-raw", "redis-benchmark"),
            (("events/s", "events/s"),),
            measure,
            rounds=env.n(5, 3, 1),
        ),
        Case(
            "stream.add_many",
            {"batch": batch},
            ("pulse-trio", "go-pulse", "redis-benchmark"),
            (("events/s", "events/s"),),
            measure_many,
            rounds=env.n(5, 3, 1),
            unsupported={"go-pulse": "goa.design/pulse v1.6.5 has no batch add"},
        ),
    ]


async def _pulse_sink(
    client: pulse_trio.Client, events: int, instances: int, nowait: bool
) -> Measurement:
    name = unique_name("sink")
    stream = streaming.Stream(client, name, max_len=0)
    try:
        await streaming_scenario.fill(stream, events)
        elapsed, _, duplicates = await streaming_scenario.consume_with_sinks(
            stream, name, events, instances, nowait
        )
    finally:
        await stream.destroy()
        await _delete_keys_with(client, name)  # the sink's maps outlive destroy()
    return Measurement({"events/s": events / elapsed}, extra={"duplicates": duplicates})


def _raw_sink(env: Env, events: int, instances: int) -> Measurement:
    """The floor of an awaited-ack sink in Python: redis-py's asyncio client, ``instances``
    tasks of one consumer group, each reading 1,000 entries at a time and awaiting one
    ``XACK`` per entry (what ``await sink.ack(event)`` does, without a sink around it)."""
    key = f"pulse:stream:{unique_name('raw-sink')}"
    result: list[float] = []

    async def main() -> None:
        import redis.asyncio

        rp = redis.asyncio.Redis.from_url(env.url)
        try:
            for first in range(0, events, 1000):
                async with rp.pipeline(transaction=False) as pipe:
                    for _ in range(min(1000, events - first)):
                        pipe.xadd(key, {"n": "bench", "p": PAYLOAD})
                    await pipe.execute()
            await rp.xgroup_create(key, "g", id="0")
            acked = 0
            done = asyncio.Event()

            async def consume(consumer: str) -> None:
                nonlocal acked
                while not done.is_set():
                    reply: Any = await rp.xreadgroup(
                        "g", consumer, {key: ">"}, count=1000, block=100
                    )
                    # A list of [stream, entries] (RESP2), or a map of them (RESP3).
                    streams = reply.items() if isinstance(reply, dict) else reply or ()
                    for _, entries in streams:
                        for entry_id, _ in entries:
                            await rp.xack(key, "g", entry_id)
                            acked += 1
                            if acked == events:
                                result.append(time.perf_counter() - started)
                                done.set()

            started = time.perf_counter()
            async with asyncio.timeout(TIMEOUT):
                # The other consumers leave after their block (100 ms), not timed.
                await asyncio.gather(*(consume(f"c{i}") for i in range(instances)))
            await rp.delete(key)
        finally:
            await rp.aclose()

    anyio.run(main, backend="asyncio")
    return Measurement({"events/s": events / result[0]})


def _sink_cases(
    env: Env, scenario: str, instance_counts: tuple[int, ...], cluster: bool = False
) -> list[Case]:
    events = env.n(10_000, 3_000, 200)
    cases = []
    for instances in instance_counts:
        for ack in ("await", "nowait") if scenario == "stream.sink" else ("await",):

            def measure(
                system: str, env: Env, instances: int = instances, ack: str = ack
            ) -> Measurement:
                if system == "pulse-trio":
                    on = _on_cluster(env) if cluster else env
                    return _run_pulse(on, _pulse_sink, events, instances, ack == "nowait")
                if system == "redis-py-raw":
                    return _raw_sink(env, events, instances)
                return _run_go(env, "sink", "--events", events, "--instances", instances)

            unsupported = {}
            if cluster:
                unsupported["go-pulse"] = NO_GO_CLUSTER
            elif ack == "nowait":
                unsupported["go-pulse"] = "goa.design/pulse has no ack_nowait (Sink.Ack only)"
            # The Python floor of awaited acks, where it is the same work.
            floor = scenario == "stream.sink" and ack == "await"
            cases.append(
                Case(
                    scenario,
                    {"instances": instances, "ack": ack, **({"masters": 3} if cluster else {})},
                    ("pulse-trio", "go-pulse", *(("redis-py-raw",) if floor else ())),
                    (("events/s", "events/s"),),
                    measure,
                    rounds=env.n(3, 2, 1),
                    unsupported=unsupported,
                )
            )
    return cases


async def _pulse_stream_latency(client: pulse_trio.Client, events: int, warmup: int) -> Measurement:
    stream = streaming.Stream(client, unique_name("e2e"))
    total = warmup + events
    samples: list[float] = []

    async def produce() -> None:
        deadline = anyio.current_time()
        for _ in range(total):
            await anyio.sleep_until(deadline)
            await stream.add("tick", time.perf_counter().hex().encode())
            deadline += 1.0 / EVENT_RATE

    try:
        with anyio.fail_after(TIMEOUT):
            async with (
                stream.open_reader(start=streaming.NEWEST) as reader,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(produce)
                received = 0
                async for event in reader:
                    latency = time.perf_counter() - float.fromhex(event.payload.decode())
                    received += 1
                    if received > warmup:
                        samples.append(latency)
                    if received == total:
                        break
    finally:
        await stream.destroy()
    return _latency({}, samples)


def _raw_stream_latency(env: Env, events: int, warmup: int) -> Measurement:
    """The floor of a reader's latency in Python: redis-py's asyncio client, a producer paced
    at :data:`EVENT_RATE` and a task blocked in ``XREAD`` in one process, as for pulse-trio."""
    key = f"pulse:stream:{unique_name('raw-e2e')}"
    total = warmup + events
    samples: list[float] = []

    async def main() -> None:
        import redis.asyncio

        rp = redis.asyncio.Redis.from_url(env.url)
        try:

            async def produce() -> None:
                loop = asyncio.get_running_loop()
                deadline = loop.time()
                for _ in range(total):
                    await asyncio.sleep(max(0.0, deadline - loop.time()))
                    await rp.xadd(key, {"n": "tick", "p": time.perf_counter().hex()})
                    deadline += 1.0 / EVENT_RATE

            async def read() -> None:
                last, received = "$", 0
                while received < total:
                    reply: Any = await rp.xread({key: last}, block=1000)
                    streams = reply.items() if isinstance(reply, dict) else reply or ()
                    for _, entries in streams:
                        for entry_id, fields in entries:
                            now = time.perf_counter()
                            received += 1
                            if received > warmup:
                                samples.append(now - float.fromhex(fields[b"p"].decode()))
                            last = entry_id

            async with asyncio.timeout(TIMEOUT):
                reader = asyncio.create_task(read())
                await asyncio.sleep(0.05)  # the XREAD at "$" is blocked before the first add
                await produce()
                await reader
            await rp.delete(key)
        finally:
            await rp.aclose()

    anyio.run(main, backend="asyncio")
    return _latency({}, samples)


def _stream_latency_cases(env: Env) -> list[Case]:
    events = env.n(3_000, 1_000, 50)
    warmup = env.n(200, 100, 5)

    def measure(system: str, env: Env) -> Measurement:
        if system == "pulse-trio":
            return _run_pulse(env, _pulse_stream_latency, events, warmup)
        if system == "redis-py-raw":
            return _raw_stream_latency(env, events, warmup)
        return _run_go(env, "latency", "--events", events, "--warmup", warmup, "--rate", EVENT_RATE)

    return [
        Case(
            "stream.latency",
            {"rate": EVENT_RATE},
            ("pulse-trio", "go-pulse", "redis-py-raw"),
            (("p50", "ms"), ("p99", "ms")),
            measure,
            rounds=env.n(3, 1, 1),
        )
    ]


# ---------------------------------------------------------------- maps

MAP_KEYS = 100


async def _pulse_rmap_get(client: pulse_trio.Client, calls: int, plain: bool) -> Measurement:
    name = unique_name("rmap")
    keys = [f"key-{i}" for i in range(MAP_KEYS)]
    async with rmap.join(client, name) as m:
        try:
            for key in keys:
                await m.set(key, f"value of {key}")
            await m.set_and_wait(keys[-1], f"value of {keys[-1]}")
            get = m.map().get if plain else m.get
            lookups = (keys * (calls // MAP_KEYS + 1))[:calls]
            for key in lookups[: calls // 10]:
                get(key)
            started = time.perf_counter()
            for key in lookups:
                get(key)
            elapsed = time.perf_counter() - started
        finally:
            await m.destroy()
    await _delete_keys_with(client, name)
    return Measurement({"ops/s": calls / elapsed})


async def _pulse_propagation(client: pulse_trio.Client, samples: int, warmup: int) -> Measurement:
    name = unique_name("rmap")
    async with rmap.join(client, name) as a, rmap.join(client, name) as b:
        try:
            taken = await rmap_scenario.propagation_samples(a, b, samples, warmup)
        finally:
            await a.destroy()
    await _delete_keys_with(client, name)  # B, still joined, may write the content back
    return _latency({}, taken)


async def _pulse_join(client: pulse_trio.Client, keys: int) -> Measurement:
    name = unique_name("join")
    content = f"map:{name}:content"
    try:
        for first in range(0, keys, 1000):
            pairs: list[str] = []
            for i in range(first, min(keys, first + 1000)):
                pairs += [f"key-{i}", f"value of key-{i}"]
            await client.execute("HSET", content, *pairs)
        started = time.perf_counter()
        async with rmap.join(client, name) as m:
            elapsed = time.perf_counter() - started
            assert len(m) == keys, (len(m), keys)
        # Memory: a second join under tracemalloc (it slows the join, so it is not timed).
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            async with rmap.join(client, name) as m:
                held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    finally:
        await client.execute("DEL", content)
    return Measurement({"join": elapsed * 1000, "memory": held / 1e6})


def _rmap_cases(env: Env) -> list[Case]:
    calls = env.n(1_000_000, 300_000, 20_000)
    samples = env.n(3_000, 1_000, 50)
    warmup = env.n(200, 100, 5)

    def measure_get(system: str, env: Env) -> Measurement:
        if system == "go-pulse":
            return _run_go(env, "rmap-get", "--keys", MAP_KEYS, "--calls", calls)
        return _run_pulse(env, _pulse_rmap_get, calls, system == "dict")

    def measure_propagation(system: str, env: Env) -> Measurement:
        if system == "go-pulse":
            return _run_go(env, "rmap-propagation", "--samples", samples, "--warmup", warmup)
        return _run_pulse(env, _pulse_propagation, samples, warmup)

    cases = [
        Case(
            "rmap.get",
            {"keys": MAP_KEYS},
            ("pulse-trio", "go-pulse", "dict"),
            (("ops/s", "ops/s"),),
            measure_get,
            rounds=env.n(5, 3, 1),
        ),
        Case(
            "rmap.propagation",
            {},
            ("pulse-trio", "go-pulse"),
            (("p50", "ms"), ("p99", "ms")),
            measure_propagation,
            rounds=env.n(3, 1, 1),
        ),
    ]
    for keys in (1_000, 10_000, 100_000)[: env.n(3, 2, 1)]:

        def measure_join(system: str, env: Env, keys: int = keys) -> Measurement:
            if system == "go-pulse":
                return _run_go(env, "rmap-join", "--keys", keys)
            return _run_pulse(env, _pulse_join, keys)

        cases.append(
            Case(
                "rmap.join",
                {"keys": keys},
                ("pulse-trio", "go-pulse"),
                (("join", "ms"), ("memory", "MB")),
                measure_join,
                rounds=env.n(3, 1, 1),
            )
        )
    return cases


# ---------------------------------------------------------------- pool


async def _pulse_failover(client: pulse_trio.Client) -> Measurement:
    rows = await pool_scenario._failover(client, "bench")
    if not rows:
        raise RuntimeError("failover needs a standalone TCP server")
    return Measurement({"failover": rows[0].value}, extra=dict(rows[0].detail))


def _failover_cases(env: Env) -> list[Case]:
    def measure(system: str, env: Env) -> Measurement:
        if system == "go-pulse":
            return _run_go(
                env, "failover", "--jobs", pool_scenario.FAILOVER_JOBS,
                "--ttl", pool_scenario.FAILOVER_TTL, "--addr", _addr(env.url),
            )  # fmt: skip
        return _run_pulse(env, _pulse_failover)

    return [
        Case(
            "pool.failover",
            {"worker_ttl": pool_scenario.FAILOVER_TTL},
            ("pulse-trio", "go-pulse"),
            (("failover", "ms"),),
            measure,
            rounds=env.n(3, 1, 1),
            warmup=False,
        )
    ]


class _Counting:
    """A no-op handler that notes the time of its last start or stop."""

    def __init__(self, shared: dict[str, float]) -> None:
        self.running: set[str] = set()
        self.shared = shared

    async def start(self, job: pool.Job) -> None:
        self.running.add(job.key)
        self.shared["last"] = time.perf_counter()

    async def stop(self, key: str) -> None:
        self.running.discard(key)
        self.shared["last"] = time.perf_counter()


async def _pulse_rebalance(client: pulse_trio.Client, jobs: int, quiet: float) -> Measurement:
    """Time from ``add_worker`` returning until the last job moved to the new worker started
    (no start or stop for ``quiet`` seconds afterwards)."""
    name = unique_name("rebalance")
    shared = {"last": 0.0}
    async with pool.open_node(client, name, max_queued_jobs=jobs + 1) as node:
        handlers = [_Counting(shared) for _ in range(WORKERS)]
        for handler in handlers:
            await node.add_worker(handler)

        async def producer(first: int) -> None:
            for i in range(first, jobs, PRODUCERS):
                await node.dispatch_job(f"r{i}", PAYLOAD)

        with anyio.fail_after(TIMEOUT * 4):
            async with anyio.create_task_group() as tg:
                for first in range(PRODUCERS):
                    tg.start_soon(producer, first)
        newcomer = _Counting(shared)
        started = time.perf_counter()
        await node.add_worker(newcomer)
        with anyio.fail_after(TIMEOUT):
            # A quiescence check: no event says "rebalance done", so poll the last change.
            while not newcomer.running or time.perf_counter() - shared["last"] < quiet:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        elapsed = shared["last"] - started
        moved = len(newcomer.running)
        with anyio.move_on_after(60):
            await node.shutdown()
    return Measurement({"rebalance": elapsed * 1000}, extra={"moved": moved})


#: Why go-pulse is not in the cluster cases.
NO_GO_CLUSTER = "goa.design/pulse v1.6.5 takes a *redis.Client: no Redis Cluster"


def _on_cluster(env: Env) -> Env:
    """``env`` pointed at the embedded 3-master cluster of ``scale.cluster``."""
    if env.cluster_url is None:
        raise RuntimeError("no cluster was started")
    return attrs.evolve(env, url=env.cluster_url)


def _scale_cases(env: Env, cluster: bool = False) -> list[Case]:
    """``scale``: jobs/s for 1-16 workers over 1 and 2 processes, rebalance after a join,
    sink events/s for 1, 2, 4 instances; with ``cluster``, the same cases on the embedded
    3-master Redis Cluster (``scale.cluster.*``, pulse-trio only)."""
    jobs = env.n(2_000, 600, 40)
    prefix = "scale.cluster" if cluster else "scale"
    where: dict[str, Any] = {"masters": 3} if cluster else {}
    target = _on_cluster if cluster else (lambda env: env)
    unsupported = {"go-pulse": NO_GO_CLUSTER} if cluster else {}
    cases = []
    for processes in (1, 2):
        for workers in (1, 2, 4, 8, 16)[: env.n(5, 5, 2)]:
            if processes == 2 and workers < 2:
                continue

            def measure(
                system: str, env: Env, workers: int = workers, processes: int = processes
            ) -> Measurement:
                if system == "go-pulse":
                    return _run_go(
                        env, "jobs", "--jobs", jobs, "--warmup", jobs // 10,
                        "--workers", workers, "--producers", PRODUCERS,
                        "--processes", processes, "--addr", _addr(env.url),
                    )  # fmt: skip
                return _run_pulse(
                    target(env), _pulse_jobs, jobs, jobs // 10, PRODUCERS, processes, workers, 0
                )

            cases.append(
                Case(
                    f"{prefix}.jobs",
                    {"workers": workers, "processes": processes, "producers": PRODUCERS, **where},
                    ("pulse-trio", "go-pulse"),
                    (("jobs/s", "jobs/s"),),
                    measure,
                    rounds=env.n(2, 1, 1),
                    unsupported=unsupported,
                )
            )
    for jobs_in_pool in (env.n(10_000, 2_000, 50), env.n(100_000, 10_000, 100)):

        def measure_rebalance(system: str, env: Env, n: int = jobs_in_pool) -> Measurement:
            return _run_pulse(target(env), _pulse_rebalance, n, 0.5 if n < 50_000 else 1.0)

        cases.append(
            Case(
                f"{prefix}.rebalance",
                {"jobs": jobs_in_pool, "workers_before": WORKERS, **where},
                ("pulse-trio",),
                (("rebalance", "ms"),),
                measure_rebalance,
                rounds=env.n(2, 1, 1),
                warmup=False,
            )
        )
    cases += _sink_cases(env, f"{prefix}.sink", (1, 2, 4), cluster)
    return cases


#: Scenario name -> its cases for an :class:`Env` (in running order).
BUILDERS: dict[str, Callable[[Env], list[Case]]] = {
    "jobs.throughput": _jobs_cases,
    "jobs.latency": _jobs_latency_cases,
    "stream.add": lambda env: _stream_add_cases(env)[:1],
    "stream.add_many": lambda env: _stream_add_cases(env)[1:],
    "stream.sink": lambda env: _sink_cases(env, "stream.sink", (2,)),
    "stream.latency": _stream_latency_cases,
    "rmap.get": lambda env: _rmap_cases(env)[:1],
    "rmap.propagation": lambda env: _rmap_cases(env)[1:2],
    "rmap.join": lambda env: _rmap_cases(env)[2:],
    "pool.failover": _failover_cases,
    "scale": _scale_cases,
    "scale.cluster": lambda env: _scale_cases(env, cluster=True),
}
