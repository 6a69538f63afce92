"""A node's admission and dispatch: the calls that wait for a worker's answer.

:meth:`Dispatcher.dispatch` (``Node.dispatch_job``) registers a waiter, queues the job for
admission and waits. Concurrent dispatches of one node are admitted together: the first
caller that finds no batch in flight sends the queue itself (``pool_dispatch``, one script
call per batch, shielded because other callers' jobs ride along); callers arriving meanwhile
queue behind it and go in the next call, sent by the admission task. A job routed to a worker
of this node is started here directly. A dispatch that no worker took within
``ack_grace_period`` is withdrawn atomically unless a worker took it (guarantee 6); so is a
cancelled one. :meth:`Dispatcher.stop` and :meth:`Dispatcher.notify` (``stop_job``,
``notify_worker``) wait for their owner's answer the same way (reference §12 #19).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping

import anyio
import attrs

from .. import _metrics
from .._batch import split_sendable
from .._boundary import text
from .._errors import RedisUnavailableError
from .._retry import backoff_delay
from . import _routing
from ._errors import (
    DispatchTimeoutError,
    JobExistsError,
    JobNotFoundError,
    JobStartError,
    JobStopError,
    NotificationError,
    PoolError,
    PoolShuttingDownError,
    QueueFullError,
)
from ._node_state import (
    CLEANUP_TIMEOUT,
    Counters,
    MembershipView,
    Options,
    Phase,
    Spawn,
    TrimMark,
    Waiter,
    Waiters,
    new_id,
)
from ._protocol import Job, Membership, ms_to_datetime
from ._redis import PoolRedis
from ._worker import Worker


@attrs.define(eq=False)
class _Admission:
    """A dispatch queued for the admission task (which sends queued ones in one batch).

    The caller waits on its waiter's event, in one cancel scope: the admission sets the
    event when the dispatch failed (``error``, or a ``status`` other than ``sent`` and
    ``local``); otherwise it moves the scope's deadline to ``ack_grace_period`` after the
    admission, and the worker's answer sets the event. The answer may come before the
    admission recorded its outcome (they are read by different tasks): the caller then waits
    for the record too (``recorded``).
    """

    key: str
    payload: bytes
    token: str
    waiter: Waiter
    #: The caller's cancel scope, whose deadline the admission moves.
    scope: anyio.CancelScope
    status: str = ""
    error: Exception | None = None
    #: When the dispatch was admitted (``anyio.current_time()``).
    admitted_at: float = 0.0
    #: The caller gave up (timeout, cancellation) before the batch was sent.
    abandoned: bool = False
    #: Made by a caller that the worker's answer woke before the admission recorded its
    #: outcome (the answer came through the node's stream first); set once it is recorded.
    recorded: anyio.Event | None = None

    def record(self, status: str = "", error: Exception | None = None) -> None:
        """Record the admission's outcome (and wake a caller waiting for it)."""
        self.status = status
        self.error = error
        if self.recorded is not None:
            self.recorded.set()


class Dispatcher:
    """Admits dispatches in batches and waits for their workers' answers; stops and
    notifies jobs."""

    def __init__(
        self,
        *,
        io: PoolRedis,
        node_id: str,
        pool: str,
        options: Options,
        logger: logging.Logger,
        phase: Phase,
        workers: Mapping[str, Worker],
        view: MembershipView,
        trim: TrimMark,
        waiters: Waiters,
        counters: Counters,
        spawn: Spawn,
        check_open: Callable[[str], object],
    ) -> None:
        self._io = io
        self._node_id = node_id
        self._pool = pool
        self._options = options
        self._logger = logger
        self._phase = phase
        self._workers = workers
        self._view = view
        self._trim = trim
        self._waiters = waiters
        self._counters = counters
        self._spawn = spawn
        self._check_open = check_open
        self._admissions: list[_Admission] = []
        self._admissions_ready = anyio.Event()
        self._admitting = False

    async def dispatch(self, key: str, data: bytes) -> None:
        """Admit job ``key`` and wait until its worker started it (see ``Node.dispatch_job``)."""
        wait = self._options.ack_grace_period
        began = time.perf_counter()
        token = new_id()
        waiter = self._waiters.add(token)
        # One cancel scope for both waits: its deadline bounds the admission, and the
        # admission moves it to ``wait`` after the job was admitted (see _Admission).
        scope = anyio.CancelScope(deadline=anyio.current_time() + wait)
        item = _Admission(key, data, token, waiter, scope)
        self._admissions.append(item)
        settled = False
        try:
            with scope:
                if self._admitting:
                    self._admissions_ready.set()
                else:
                    # Nobody is sending: send this batch here (saves two task switches on the
                    # sequential path); later callers queue up behind it.
                    await self._admit_queued()
                if not waiter.event.is_set():
                    await waiter.event.wait()
                if waiter.answered and not item.status and item.error is None:
                    # The worker's answer overtook the admission's own reply (it came on the
                    # node's stream, read by another task): the job was admitted; let the
                    # admission record it before going on.
                    item.recorded = anyio.Event()
                    await item.recorded.wait()
            if not item.status and item.error is None:
                item.abandoned = True
                if waiter.event.is_set():  # woken by the node's closing
                    self._check_open("dispatch_job")
                raise RedisUnavailableError(
                    f"pool {self._pool!r}: dispatch of {key!r}: no answer from Redis within {wait}s"
                )
            if item.error is not None:
                raise item.error
            status = item.status
            if status == "exists":
                raise JobExistsError(f"job {key!r} already exists in pool {self._pool!r}", key=key)
            if status == "full":
                raise QueueFullError(
                    f"pool {self._pool!r}: max_queued_jobs={self._options.max_queued_jobs} jobs "
                    "wait to start; retry later",
                    key=key,
                )
            if status == "shutdown":
                raise PoolShuttingDownError(f"pool {self._pool!r} is shutting down", key=key)
            self._counters.dispatched += 1
            self._counters.cell.dispatched += 1
            await self._await_start(key, token, waiter, wait, item.admitted_at + wait)
            settled = True
            if _metrics.dispatch_duration is not None:
                _metrics.dispatch_duration.record(
                    time.perf_counter() - began, {"pulse_trio.pool.name": self._pool}
                )
        finally:
            self._waiters.remove(token)
            item.abandoned = True
            if not settled and item.status in ("sent", "local"):
                # Cancelled while waiting: withdraw unless a worker took it.
                await self._withdraw(key, token)

    async def run(self) -> None:
        """Send the dispatches queued by concurrent callers, one script call per batch."""
        while True:
            await self._admissions_ready.wait()
            self._admissions_ready = anyio.Event()
            while self._admissions and not self._admitting:
                await self._admit_queued()

    async def _admit_queued(self) -> None:
        """Send what is queued as one batch (shielded: other callers' jobs ride along)."""
        self._admitting = True
        try:
            batch = [item for item in self._admissions if not item.abandoned]
            self._admissions = []
            if batch:
                with anyio.CancelScope(shield=True):
                    await self._admit(batch)
        finally:
            self._admitting = False
            if self._admissions:
                self._admissions_ready.set()

    async def _admit(self, batch: list[_Admission]) -> None:
        # A part the transport cannot send fails its own caller, never the batch.
        batch, refused = split_sendable(batch, lambda item: (item.key, item.payload))
        for item, error in refused:
            item.record(error=error)
            item.waiter.event.set()
        if not batch:
            return
        try:
            for _ in range(20):
                members = self._view.current
                args: list[str | bytes] = []
                locals_: list[Worker | None] = []
                routes: list[_routing.Routed | None] = []
                for item in batch:
                    owner, routed = _routing.route(item.key, members.worker_set)
                    target = owner or ""
                    local = self._local_worker(target)
                    locals_.append(local)
                    routes.append(routed)
                    args += [
                        item.key,
                        item.payload,
                        item.token,
                        target,
                        members.workers.get(target, ""),
                        "1" if local is not None else "0",
                    ]
                with anyio.fail_after(self._options.ack_grace_period):
                    reply = await self._io.run(
                        "dispatch",
                        self._node_id,
                        members.epoch,
                        str(self._options.max_queued_jobs),
                        self._trim.take(),
                        *args,
                    )
                status = text(reply[0])
                if status != "stale":
                    break
                self._view.update(Membership.from_flat(reply[1:]), from_redis=True)
            else:  # pragma: no cover - needs 20 membership changes during one batch
                raise PoolError(f"pool {self._pool!r}: membership changes too fast to route")
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                exc = RedisUnavailableError(
                    f"pool {self._pool!r}: no answer from Redis to a dispatch within "
                    f"{self._options.ack_grace_period}s"
                )
            for item in batch:
                item.record(error=exc)
                item.waiter.event.set()
            return
        admitted_at = anyio.current_time()
        deadline = admitted_at + self._options.ack_grace_period
        for i, item in enumerate(batch):
            result = "shutdown" if status == "shutdown" else text(reply[1 + i])
            if result.startswith("local:"):
                _, token, created = result.split(":")
                local = locals_[i]
                assert local is not None
                job = Job(item.key, item.payload, ms_to_datetime(int(created)), False,
                          self._node_id, local.id)  # fmt: skip
                local._enqueue(
                    item.key,
                    functools.partial(local._start_job, job, token, members.epoch, routes[i]),
                )
                result = "local"
            item.record(result)
            if result in ("sent", "local"):
                item.admitted_at = admitted_at
                if not item.abandoned:
                    # The caller now waits for the start, ack_grace_period from here.
                    item.scope.deadline = deadline
            else:
                item.waiter.event.set()
            if item.abandoned and result == "sent":
                # Its caller gave up while the batch was in flight: withdraw it for them.
                self._spawn(self._withdraw, item.key, item.token)

    async def _withdraw(self, key: str, token: str) -> None:
        with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True):
            try:
                await self._io.run("withdraw", key, token)
            except Exception as exc:
                self._logger.warning("pool %s: withdrawing %r failed: %r", self._pool, key, exc)

    def _local_worker(self, worker_id: str) -> Worker | None:
        """This node's worker ``worker_id`` if it can take a start right now."""
        worker = self._workers.get(worker_id)
        if worker is None or worker.removed or self._phase.closing or self._phase.fenced:
            return None
        if self._phase.shutting_down or self._options.client_only:
            return None
        return worker

    async def _await_start(
        self, key: str, token: str, waiter: Waiter, wait: float, deadline: float
    ) -> None:
        """Wait for the worker's answer until ``deadline``, then withdraw the job (a worker
        that took it meanwhile gets another ``wait``)."""
        while True:
            if not waiter.event.is_set():
                with anyio.CancelScope(deadline=deadline):
                    await waiter.event.wait()
            if waiter.event.is_set():
                self._check_open("dispatch_job")
                if waiter.ok:
                    return
                raise JobStartError(key, waiter.error)
            outcome = text(await self._io.run("withdraw", key, token))
            if outcome == "withdrawn":
                raise DispatchTimeoutError(
                    f"pool {self._pool!r}: no worker took job {key!r} within {wait}s; it was "
                    "withdrawn and will not start",
                    key=key,
                )
            if outcome == "running":
                return
            if outcome == "gone":
                if waiter.event.is_set():
                    continue
                raise JobStartError(key, "the job was stopped or failed to start")
            # 'taken': a worker is starting it; its answer will come.
            deadline = anyio.current_time() + wait

    async def stop(self, key: str) -> None:
        """Stop job ``key`` and wait for its owner's answer (see ``Node.stop_job``)."""
        token = new_id()
        waiter = self._waiters.add(token)
        try:
            attempt = 0
            while True:
                status = text(await self._io.run("stop", key, self._node_id, token))
                if status == "notfound" and attempt > 0:
                    # Another stop_job was stopping it when this one came: it is stopped.
                    return
                if status == "notfound":
                    raise JobNotFoundError(f"no job {key!r} in pool {self._pool!r}", key=key)
                if status == "removed":
                    return
                if status == "busy":
                    await anyio.sleep(backoff_delay(attempt, cap=0.5))
                    attempt += 1
                    continue
                break
            while True:
                with anyio.move_on_after(self._options.ack_grace_period):
                    await waiter.event.wait()
                if waiter.event.is_set():
                    self._check_open("stop_job")
                    if not waiter.ok and waiter.error:
                        raise JobStopError(key, waiter.error)
                    return
                record = await self._io.run("jobs", key)
                if not record[0]:
                    return
        finally:
            self._waiters.remove(token)

    async def notify(self, key: str, data: bytes) -> None:
        """Notify the handler of job ``key`` and wait for it (see ``Node.notify_worker``)."""
        token = new_id()
        waiter = self._waiters.add(token)
        grace = self._options.ack_grace_period
        try:
            with anyio.move_on_after(grace) as scope:
                attempt = 0
                while True:
                    status = text(await self._io.run("notify", key, self._node_id, token, data))
                    if status == "notfound":
                        raise JobNotFoundError(f"no job {key!r} in pool {self._pool!r}", key=key)
                    if status == "sent":
                        break
                    await anyio.sleep(backoff_delay(attempt, cap=0.5))
                    attempt += 1
                await waiter.event.wait()
            if scope.cancelled_caught:
                raise DispatchTimeoutError(
                    f"pool {self._pool!r}: no answer to the notification of {key!r} "
                    f"within {grace}s",
                    key=key,
                )
            self._check_open("notify_worker")
            if not waiter.ok:
                raise NotificationError(
                    f"notification of job {key!r} failed: {waiter.error}", key=key
                )
        finally:
            self._waiters.remove(token)
