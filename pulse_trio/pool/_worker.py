"""Workers and job handlers: the ``JobHandler`` protocol, :class:`Worker`, :func:`job_tasks`.

A worker runs on a node and calls its handler for the jobs routed to it. Everything a worker
does for one job key (start, stop, notification, move) runs in order, one at a time, in a
task of the worker's own task group; different keys run concurrently.

The tasks are reused: a drainer task runs one key's operations until its queue is empty, then
takes the next waiting key, and parks when there is none (up to :data:`MAX_IDLE_DRAINERS`
stay parked). A key never waits behind another key's operation: before a drainer runs an
operation while other keys wait, it makes sure another drainer is on its way.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import anyio
import anyio.abc
import attrs

from .._text import writable
from ._node_api import WorkerHost
from ._protocol import Job
from ._routing import Routed


@runtime_checkable
class JobHandler(Protocol):
    """What a worker calls for the jobs it runs.

    ``start`` returns once the job runs (it acknowledges the dispatch: ``dispatch_job``
    returns then); an exception fails the dispatch with :class:`JobStartError` carrying its
    message. ``stop`` returns once the job stopped. A handler may also define
    ``async def handle_notification(self, key: str, payload: bytes) -> None`` to receive
    :meth:`Node.notify_worker` payloads. For jobs that are tasks, use :func:`job_tasks`.
    """

    async def start(self, job: Job) -> None:
        """Start ``job`` and return once it runs."""

    async def stop(self, key: str) -> None:
        """Stop the job ``key`` and return once it stopped."""


@attrs.frozen
class WorkerInfo:
    """A worker of the pool (see :meth:`Node.workers`).

    Attributes:
        id: The worker's id.
        node_id: The id of the node that runs it.
    """

    id: str
    node_id: str


@attrs.define(eq=False)
class _LocalJob:
    """A job this worker runs or is starting. Mutated only by the job key's queue task
    (but for routing's cache, ``beats`` and ``digest``, which the rebalance task refreshes)."""

    job: Job
    token: str
    running: bool = False
    #: Routing's cache (``_routing.Rechecker``): workers this one is known to outscore for the
    #: key, and its score as a digest (set when routing computed them; never guessed).
    beats: frozenset[str] | None = None
    digest: bytes = b""


Op = Callable[[], Awaitable[object]]

#: Drainer tasks a worker keeps parked for the next keys (more are started when needed).
MAX_IDLE_DRAINERS = 32


class Worker:
    """A worker of a node, created by :meth:`Node.add_worker`.

    Attributes:
        id: The worker's id, unique in the pool.
        node_id: The id of the node that runs it.
        handler: The user's :class:`JobHandler`.
    """

    def __init__(self, host: WorkerHost, worker_id: str, handler: JobHandler) -> None:
        self.id = worker_id
        self.node_id = host.id
        self.handler = handler
        self._host = host
        self._logger = host.logger
        #: key -> local job; written only by that key's queue task.
        self._jobs: dict[str, _LocalJob] = {}
        #: key -> operations waiting to run for it, in order (the head is running).
        self._queues: dict[str, deque[Op]] = {}
        #: Keys whose queue no drainer runs yet, in order of arrival (a key's queue is only
        #: replaced once drained, so ``_queues[key]`` is the one waiting).
        self._pending: deque[str] = deque()
        #: Parked drainers, each waiting on its own event.
        self._idle: list[anyio.Event] = []
        #: Drainers woken or started that have not looked at ``_pending`` yet.
        self._waking = 0
        self._tg: anyio.abc.TaskGroup | None = None
        self._done = anyio.Event()
        self.removed = False

    def __repr__(self) -> str:
        return f"<pool.Worker {self.id} node={self.node_id} jobs={len(self._jobs)}>"

    def job_keys(self) -> list[str]:
        """The keys of the jobs this worker runs now (sorted)."""
        return sorted(key for key, local in self._jobs.items() if local.running)

    # ------------------------------------------------------------------ node-facing
    # The node's collaborators drive a worker only through its underscored methods below and
    # under "per-key queues" and "operations"; none of them touches its attributes.

    def _local(self, key: str) -> _LocalJob | None:
        """The job ``key`` this worker runs or is starting, if any."""
        return self._jobs.get(key)

    def _local_keys(self) -> list[str]:
        """The keys of the jobs this worker runs or is starting."""
        return list(self._jobs)

    # ------------------------------------------------------------------ lifecycle

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """The worker's task group lives as long as this task (a task of the node)."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                bind = getattr(self.handler, "_bind_worker", None)
                if bind is not None:
                    bind(self, tg)
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._tg = None
            self._done.set()

    def _cancel(self) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    # ------------------------------------------------------------------ per-key queues

    def _enqueue(self, key: str, op: Op) -> None:
        """Run ``op`` after every operation queued before for ``key`` (sync, never blocks)."""
        if self._tg is None:
            return
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(op)
            return
        queue = self._queues[key] = deque()
        queue.append(op)
        self._pending.append(key)
        if not self._waking:
            self._wake_drainer()

    def _wake_drainer(self) -> None:
        """Wake a parked drainer, or start one (``_tg`` is set)."""
        assert self._tg is not None
        if self._idle:
            self._idle.pop().set()
        else:
            self._tg.start_soon(self._drainer)
        self._waking += 1

    async def _drainer(self) -> None:
        """Run waiting keys' queues one after the other; park when none waits."""
        while True:
            self._waking -= 1
            while self._pending:
                key = self._pending.popleft()
                if self._pending and not self._waking and self._tg is not None:
                    # The next key must not wait for this one's operations.
                    self._wake_drainer()
                await self._drain(key, self._queues[key])
            if len(self._idle) >= MAX_IDLE_DRAINERS:
                return
            wake = anyio.Event()
            self._idle.append(wake)
            await wake.wait()

    async def _drain(self, key: str, queue: deque[Op]) -> None:
        try:
            while queue:
                await queue[0]()
                queue.popleft()
        finally:
            if self._queues.get(key) is queue:
                del self._queues[key]

    # ------------------------------------------------------------------ operations

    async def _start_job(
        self, job: Job, token: str, epoch: str, routed: Routed | None = None
    ) -> None:
        """Start ``job`` unless this worker runs it already (a redelivered start); ``epoch``
        is the membership it was routed with; ``routed``, when this node routed it: the
        workers it outscored for the key and its digest (see ``_LocalJob.beats``)."""
        host = self._host
        local = self._jobs.get(job.key)
        if local is not None and local.running:
            # Guarantee 5: a second start for a key this worker runs never reaches the
            # handler; the assignment is acknowledged as started.
            local.token = token
            host.ack("s", job.key, self.id, token, None)
            return
        if self.removed or host.stopping:
            # This worker already stopped its jobs (it is leaving, its node closes, fences or
            # shuts down): a start that arrives now would never be stopped and would run on
            # while the pool restarts it elsewhere (reference §12 #4). Its record stays with
            # this worker until the removal that follows makes it unassigned.
            return
        local = self._jobs[job.key] = _LocalJob(job, token)
        if routed is not None:
            local.beats, local.digest = routed
        try:
            await self.handler.start(job)
        except Exception as exc:
            self._jobs.pop(job.key, None)
            self._logger.warning(
                "pool %s: worker %s: start of job %r failed: %r", host.pool, self.id, job.key, exc
            )
            host.ack("s", job.key, self.id, token, _message(exc))
            return
        local.running = True
        host.ack("s", job.key, self.id, token, None)
        host.check_placement(self.id, job.key, epoch)
        await host.flush_acks_here()

    async def _stop_job(self, key: str, token: str, reply: str) -> None:
        """Stop ``key`` for a ``stop_job`` call and answer it."""
        local = self._jobs.pop(key, None)
        error: str | None = None
        if local is not None and local.running:
            error = await self._call_stop(key)
        self._host.ack("x", key, self.id, token, error, reply)

    async def _notify(self, key: str, token: str, payload: bytes, reply: str) -> None:
        """Hand a notification to the handler and answer the caller."""
        local = self._jobs.get(key)
        error: str | None = None
        handle = getattr(self.handler, "handle_notification", None)
        if local is None or not local.running:
            error = f"job {key!r} is not running on worker {self.id}"
        elif handle is None:
            error = f"the handler of worker {self.id} has no handle_notification method"
        else:
            try:
                await handle(key, payload)
            except Exception as exc:
                error = _message(exc)
        self._host.ack("n", key, self.id, token, error, reply)

    async def _stop_locally(self, key: str, token: str | None = None) -> bool:
        """Stop ``key`` without telling Redis (moves, fencing, closing); True if it ran."""
        local = self._jobs.get(key)
        if local is None or (token is not None and local.token != token):
            return False
        del self._jobs[key]
        if local.running:
            await self._call_stop(key)
        return True

    async def _ended(self, key: str, token: str, error: str | None) -> None:
        """A job-task ended by itself: remove it (``error`` None) or retry it."""
        local = self._jobs.get(key)
        if local is None or local.token != token:
            return
        del self._jobs[key]
        self._host.ack("c" if error is not None else "x", key, self.id, token, error, "")

    async def _call_stop(self, key: str) -> str | None:
        try:
            await self.handler.stop(key)
        except Exception as exc:
            self._logger.warning(
                "pool %s: worker %s: stop of job %r failed: %r", self._host.pool, self.id, key, exc
            )
            return _message(exc)
        return None


async def stop_all_locally(workers: list[Worker]) -> None:
    """Stop every job of ``workers`` through their key queues; wait for all of them (closing,
    fencing, shutting down: Redis is told by the caller)."""
    async with anyio.create_task_group() as tg:
        for worker in workers:
            if worker._jobs:
                tg.start_soon(_stop_jobs_locally, worker)


async def _stop_jobs_locally(worker: Worker) -> None:
    """Stop ``worker``'s jobs, or stop waiting once its task group ended: its queues and its
    jobs' tasks ended with it (a background task of the node failed), and an operation queued
    now would never run."""
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                await worker._done.wait()
                scope.cancel()

            tg.start_soon(watch)
            stopped = []
            for key in list(worker._jobs):
                done = anyio.Event()

                async def op(k: str = key, d: anyio.Event = done) -> None:
                    try:
                        await worker._stop_locally(k)
                    finally:
                        d.set()

                worker._enqueue(key, op)
                stopped.append(done)
            for done in stopped:
                await done.wait()
            scope.cancel()


def _message(exc: BaseException) -> str:
    # Sent to Redis in the node's shared acknowledgement batch: made writable here, in the
    # worker's own task, so that no handler's message can fail the batch.
    return writable(str(exc)) or type(exc).__name__


class TaskStatus(Protocol):
    """What :func:`job_tasks` passes as ``task_status``: call ``started()`` once the job runs."""

    def started(self, value: Any = None) -> None:
        """Acknowledge the start (the dispatch returns)."""


JobTask = Callable[..., Awaitable[None]]


class _JobTasks:
    """The handler made by :func:`job_tasks` (one per call; it may serve several workers)."""

    def __init__(self, fn: JobTask) -> None:
        self._fn = fn
        self._workers: dict[str, tuple[Worker, anyio.abc.TaskGroup]] = {}
        self._running: dict[tuple[str, str], tuple[anyio.CancelScope, anyio.Event, str]] = {}

    def _bind_worker(self, worker: Worker, tg: anyio.abc.TaskGroup) -> None:
        self._workers[worker.id] = (worker, tg)

    async def start(self, job: Job) -> None:
        worker, tg = self._workers[job.worker_id]
        local = worker._jobs[job.key]
        await tg.start(self._run, worker, job, local.token)

    async def _run(
        self, worker: Worker, job: Job, token: str, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        started = False
        done = anyio.Event()
        ident = (job.worker_id, job.key)

        class _Status:
            def started(self, value: Any = None) -> None:
                nonlocal started
                started = True
                task_status.started()

        error: str | None = None
        with anyio.CancelScope() as scope:
            self._running[ident] = (scope, done, token)
            try:
                await self._fn(job, task_status=_Status())
                if not started:
                    raise RuntimeError(
                        f"job task for {job.key!r} returned without calling task_status.started()"
                    )
            except Exception as exc:
                if not started:
                    raise
                error = _message(exc)
                worker._logger.error(
                    "pool %s: job task %r failed after its start: %r",
                    worker._host.pool,
                    job.key,
                    exc,
                    exc_info=exc,
                )
            finally:
                if self._running.get(ident, (None, None, None))[0] is scope:
                    del self._running[ident]
                done.set()
        if scope.cancelled_caught:
            return
        # The task ended by itself: hand the outcome to the worker, in the key's order.
        worker._enqueue(job.key, lambda: worker._ended(job.key, token, error))

    async def stop(self, key: str) -> None:
        for ident in [ident for ident in self._running if ident[1] == key]:
            scope, done, _ = self._running[ident]
            scope.cancel()
            await done.wait()


def job_tasks(fn: JobTask) -> JobHandler:
    """Make a handler whose jobs are tasks: the structured way to write long-running jobs.

    ``await fn(job, *, task_status)`` runs in the worker's task group. It calls
    ``task_status.started()`` once the job runs, which acknowledges the dispatch
    (``dispatch_job`` returns); an exception before that fails the dispatch with
    :class:`JobStartError`. Stopping the job (``stop_job``, a move to another worker, closing
    the node) cancels its scope. If ``fn`` raises after ``started()``, the error is logged and
    the job is released and retried on a worker with backoff (guarantee 8); if it returns, the
    job is finished and removed from the pool.

    Args:
        fn: ``async def fn(job: pool.Job, *, task_status) -> None``.

    Returns:
        A :class:`JobHandler` to give to :meth:`Node.add_worker` (one handler may serve
        several workers).

    Cancellation:
        Each job's task is cancelled when the job is stopped, and all of them when their
        worker or node is closed.
    """
    if not callable(fn):
        raise TypeError(f"job_tasks needs an async function, not {type(fn).__name__}")
    return _JobTasks(fn)


_log = logging.getLogger("pulse_trio.pool")
