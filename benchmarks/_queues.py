"""The Python job queues, each in its documented idiomatic configuration (asyncio).

Every queue gets :data:`CONCURRENCY` concurrent jobs: one worker with that concurrency in this
process beside the producer, or (the 2-process cases) half of it here and half in a
``benchmarks._queue_worker`` child running the same worker; each worker is the queue's own
worker loop, started the way its docs show for running a worker from code. The task is a
no-op that records ``perf_counter() - stamp`` (enqueue -> executed; producer and worker share
the clock). :func:`open_queue` yields a :class:`Queue`. The configuration of each is in
benchmarks/README.md; imports happen only when a queue is opened, so a missing package never
breaks the runner.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio

#: Concurrent jobs per worker: the same as pulse-trio's 4 workers.
CONCURRENCY = 4
#: The queues :func:`open_queue` knows.
QUEUES = ("streaq", "taskiq", "saq", "arq")


class Tracker:
    """Counts executed jobs and keeps their enqueue -> executed latencies (seconds)."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        #: Jobs executed by a child process's worker (counted in :attr:`count` too).
        self.remote_count = 0
        self.latencies: list[float] = []
        self.reached = anyio.Event()
        #: Called after every job executed here (a child process reports its count with it).
        self.listener: Callable[[], None] | None = None

    def expect(self, jobs: int) -> None:
        """Start a measurement: ``reached`` is set once ``jobs`` more jobs executed."""
        self.count = 0
        self.remote_count = 0
        self.target = jobs
        self.latencies = []
        self.reached = anyio.Event()

    def executed(self, stamp: float) -> None:
        """Record one executed job enqueued at ``stamp`` (``perf_counter``)."""
        self.latencies.append(time.perf_counter() - stamp)
        self._add(1)
        if self.listener is not None:
            self.listener()

    def executed_elsewhere(self, jobs: int) -> None:
        """Record ``jobs`` jobs that a child process's worker executed (no latencies)."""
        self.remote_count += jobs
        self._add(jobs)

    def _add(self, jobs: int) -> None:
        self.count += jobs
        if self.count >= self.target:
            self.reached.set()


#: The tracker the module-level task functions report to (one queue open at a time).
TRACKER = Tracker()


class Queue:
    """An open queue: ``await enqueue(stamp)`` sends one no-op job."""

    def __init__(self, system: str, enqueue: Callable[[float], Awaitable[Any]]) -> None:
        self.system = system
        self._enqueue = enqueue

    async def enqueue(self, stamp: float) -> None:
        """Enqueue one no-op job carrying ``stamp``."""
        await self._enqueue(stamp)


# Task bodies, at module level: arq and saq find functions by name.
async def arq_noop(ctx: dict[str, Any], stamp: float) -> None:
    """The arq task."""
    TRACKER.executed(stamp)


async def saq_noop(ctx: Any, *, stamp: float) -> None:
    """The saq task."""
    TRACKER.executed(stamp)


# streaq and taskiq each get a function of their own: taskiq renames the function it
# registers (``__name__`` and ``__qualname__`` get a ``__taskiq_original`` suffix), and streaq
# names a task after its function's ``__qualname__``, so a shared function would make this
# process's streaq enqueue a task name that a fresh worker process does not know.
async def streaq_noop(stamp: float) -> None:
    """The streaq task."""
    TRACKER.executed(stamp)


async def taskiq_noop(stamp: float) -> None:
    """The taskiq task."""
    TRACKER.executed(stamp)


@contextlib.asynccontextmanager
async def open_queue(
    system: str, url: str, name: str, concurrency: int = CONCURRENCY
) -> AsyncIterator[Queue]:
    """Start ``system``'s worker on queue ``name`` and yield a producer (asyncio only).

    Args:
        system: One of :data:`QUEUES`.
        url: The Redis server.
        name: The queue's name (unique per measurement).
        concurrency: The worker's concurrent jobs.
    """
    opener = {"streaq": _streaq, "taskiq": _taskiq, "saq": _saq, "arq": _arq}[system]
    async with opener(url, name, concurrency) as queue:
        yield queue


@contextlib.asynccontextmanager
async def _streaq(url: str, name: str, concurrency: int) -> AsyncIterator[Queue]:
    from streaq import Worker

    worker = Worker(redis_url=url, queue_name=name, concurrency=concurrency, handle_signals=False)
    task = worker.task(streaq_noop)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)
        try:
            yield Queue("streaq", lambda stamp: task.enqueue(stamp))
        finally:
            tg.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def _taskiq(url: str, name: str, concurrency: int) -> AsyncIterator[Queue]:
    import asyncio

    from taskiq.api import run_receiver_task
    from taskiq_redis import RedisStreamBroker

    broker = RedisStreamBroker(url=url, queue_name=name, consumer_group_name=name)
    task = broker.register_task(taskiq_noop, task_name="bench_noop")
    await broker.startup()
    # taskiq's documented way to run a worker from code: an asyncio task, cancelled to stop.
    receiver = asyncio.create_task(run_receiver_task(broker, max_async_tasks=concurrency))
    try:
        yield Queue("taskiq", lambda stamp: task.kiq(stamp))
    finally:
        receiver.cancel()
        # The cancelled receiver can take seconds to wind down (seen here: over 10 s, its
        # shielded clean-up); the measurement is over, so wait for it only briefly.
        with anyio.move_on_after(1, shield=True):
            await asyncio.wait([receiver])
        with anyio.move_on_after(5, shield=True):
            await broker.shutdown()


@contextlib.asynccontextmanager
async def _saq(url: str, name: str, concurrency: int) -> AsyncIterator[Queue]:
    from saq import Queue as SaqQueue
    from saq import Worker

    queue = SaqQueue.from_url(url, name=name)
    worker = Worker(queue, functions=[("bench_noop", saq_noop)], concurrency=concurrency)
    await queue.connect()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.start)
            try:
                yield Queue("saq", lambda stamp: queue.enqueue("bench_noop", stamp=stamp))
            finally:
                with anyio.move_on_after(5, shield=True):
                    await worker.stop()
                tg.cancel_scope.cancel()
    finally:
        await queue.disconnect()


@contextlib.asynccontextmanager
async def _arq(url: str, name: str, concurrency: int) -> AsyncIterator[Queue]:
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    settings = RedisSettings.from_dsn(url)
    worker = Worker(
        functions=[func(arq_noop, name="bench_noop")],
        redis_settings=settings,
        queue_name=name,
        max_jobs=concurrency,
        handle_signals=False,
    )
    redis = await create_pool(settings, default_queue_name=name)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.async_run)
            try:
                yield Queue("arq", lambda stamp: redis.enqueue_job("bench_noop", stamp))
            finally:
                tg.cancel_scope.cancel()
    finally:
        # Not worker.close(): it awaits the job tasks the cancellation above already ended.
        with anyio.move_on_after(5, shield=True):
            await redis.aclose()
            if worker._pool is not None:
                await worker._pool.aclose()
