"""Pool nodes: :func:`open_node` and :class:`Node`.

A node joins a pool, runs workers (unless client-only), dispatches, stops and notifies jobs,
and keeps its part of the pool alive: one heartbeat task (liveness on the Redis clock,
reaping of dead nodes, placement of jobs waiting for a worker), one reader of its own stream
(starts, stops and notifications for its workers, replies to its callers, membership and
shutdown messages), one task that sends the workers' acknowledgements in batches, a fencing
watchdog, and one task group per worker. The protocol is in ``docs/pool-protocol.md``.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Iterable
from typing import Any

import anyio
import anyio.abc
import attrs

from .._batch import split_sendable
from .._boundary import Client, check_client, is_transient, text
from .._errors import ClosedError, RedisUnavailableError
from .._lifecycle import Service, State
from .._names import validate_duration, validate_name
from .._retry import backoff_delay
from ..streaming._options import block_ms
from . import _routing
from ._errors import (
    DispatchTimeoutError,
    JobExistsError,
    JobNotFoundError,
    JobStartError,
    JobStopError,
    NotificationError,
    PoolClosedError,
    PoolError,
    PoolShuttingDownError,
    QueueFullError,
)
from ._protocol import (
    Job,
    JobInfo,
    MalformedMessageError,
    Membership,
    Message,
    decode_message,
    ms_to_datetime,
    next_id,
    parse_record,
    reply_spec,
    validate_key,
    validate_payload,
)
from ._redis import PoolRedis
from ._ticker import JobProducer, Ticker, run_schedule
from ._worker import JobHandler, Worker, WorkerInfo

#: Default liveness TTL of a node and its workers, in seconds.
DEFAULT_WORKER_TTL = 30.0
#: Default bound on handing jobs over when a node closes or the pool shuts down, in seconds.
DEFAULT_WORKER_SHUTDOWN_TTL = 120.0
#: Default time a dispatch waits for a worker to take its job before withdrawing it, seconds.
DEFAULT_ACK_GRACE_PERIOD = 20.0
#: Default bound on jobs admitted and not yet running.
DEFAULT_MAX_QUEUED_JOBS = 1000
#: Starts of a requeued job that may fail before it is recorded as failed (guarantee 8).
MAX_START_ATTEMPTS = 5
#: First retry delay of a failed start, in seconds (doubled per failure, capped at the TTL).
RETRY_BASE_DELAY = 0.1
#: Heartbeats per worker TTL.
HEARTBEATS_PER_TTL = 5
#: A node stops its own jobs (fences) when its last successful heartbeat was sent this
#: fraction of the TTL ago: before any other node may consider it dead.
FENCE_FRACTION = 0.7
#: Entries read from the node's stream per XREAD, and unassigned keys placed per heartbeat.
BATCH = 1000
#: Longest block of the node stream's XREAD, in ms (cancellation is immediate anyway).
READ_BLOCK_MS = 1000
#: Longest time a shielded cleanup command may take when the node closes, in seconds.
CLEANUP_TIMEOUT = 5.0


def _new_id() -> str:
    return secrets.token_hex(8)


@attrs.frozen
class _Options:
    worker_ttl: float
    worker_shutdown_ttl: float
    ack_grace_period: float
    max_queued_jobs: int
    client_only: bool


@attrs.frozen
class NodeStatistics:
    """What :meth:`Node.statistics` reports.

    Attributes:
        dispatched: Jobs this node admitted with ``dispatch_job``.
        started: Starts this node's workers acknowledged.
        fenced: Times the node stopped its jobs because it could not renew its liveness.
        malformed: Entries of its stream it could not decode (logged and skipped).
        workers: Its workers now.
        running: Jobs its workers run now.
        epoch: The pool membership epoch it knows.
        is_fenced: Whether it is fenced right now.
    """

    dispatched: int
    started: int
    fenced: int
    malformed: int
    workers: int
    running: int
    epoch: int
    is_fenced: bool


class _Waiter:
    """A caller waiting for a reply on this node's stream. Registered before the request is
    sent, so a reply can never arrive before its waiter (reference §12 #9)."""

    __slots__ = ("error", "event", "ok")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.ok = False
        self.error = ""


@attrs.define(eq=False)
class _Admission:
    """A dispatch queued for the admission task (which sends queued ones in one batch).

    The caller waits on its waiter's event alone, in one cancel scope: the admission sets
    the event when the dispatch failed (``error``, or a ``status`` other than ``sent`` and
    ``local``); otherwise it moves the scope's deadline to ``ack_grace_period`` after the
    admission, and the worker's answer sets the event.
    """

    key: str
    payload: bytes
    token: str
    waiter: _Waiter
    #: The caller's cancel scope, whose deadline the admission moves.
    scope: anyio.CancelScope
    status: str = ""
    error: Exception | None = None
    #: When the dispatch was admitted (``anyio.current_time()``).
    admitted_at: float = 0.0
    #: The caller gave up (timeout, cancellation) before the batch was sent.
    abandoned: bool = False


class Node(Service):
    """A member of a pool: made by :func:`open_node`, used inside its ``async with`` block.

    Attributes:
        id: This node's id, unique in the pool.
        pool: The pool's name.
        client_only: Whether the node only dispatches, stops, notifies and lists.

    Errors: besides what each method lists, any call that reaches Redis may raise
    :class:`pulse_trio.RedisCommandError` when Redis rejects a command (an ACL denial,
    ``OOM``, ``READONLY`` on a replica), with the client's error chained.

    Cancellation:
        The node's tasks (heartbeat, stream reader, acknowledgement sender, fencing watchdog,
        workers and their handlers' calls) live in its task group; leaving the block hands
        this node's jobs over (bounded by ``worker_shutdown_ttl``) and then cancels them all.
    """

    _kind = "node"
    _factory = "pulse_trio.pool.open_node(client, name, ...)"

    def __init__(
        self, client: Client, name: str, options: _Options, logger: logging.Logger
    ) -> None:
        self.id = _new_id()
        self.pool = name
        self.client_only = options.client_only
        self._options = options
        self._logger = logger
        self._io = PoolRedis(client, name)
        #: The node stream's XREAD block.
        self._block_ms = block_ms(READ_BLOCK_MS / 1000)
        ttl = options.worker_ttl
        self._ttl_ms = str(max(1, round(ttl * 1000)))
        self._membership = Membership()
        self._workers: dict[str, Worker] = {}
        self._waiters: dict[str, _Waiter] = {}
        self._cursor = "0-0"
        self._trim_below = ""
        self._acks: list[str] = []
        self._acks_ready = anyio.Event()
        self._flushing = False
        self._wake_heartbeat = anyio.Event()
        self._rebalance_needed = anyio.Event()
        self._released: dict[str, set[str]] = {}
        self._release_ready = anyio.Event()
        self._to_place: set[str] = set()
        self._admissions: list[_Admission] = []
        self._admissions_ready = anyio.Event()
        self._admitting = False
        self._place_ready = anyio.Event()
        #: Local monotonic time until which this node may run jobs (renewed by heartbeats).
        self._lease_until = 0.0
        self._fenced = False
        self._fencing_done = anyio.Event()
        self._fencing_done.set()
        #: Starts read while fenced, taken once recovery re-registered the workers.
        self._deferred_starts: list[Message] = []
        self._closing = False
        self._shutting_down = False
        self._shutdown_handled = False
        self._counts = {"dispatched": 0, "started": 0, "fenced": 0, "malformed": 0}

    def __repr__(self) -> str:
        return (
            f"<pool.Node {self.id} pool={self.pool!r} state={self._state.value} "
            f"workers={len(self._workers)} epoch={self._membership.epoch}>"
        )

    def _closed_error(self, message: str) -> ClosedError:
        return PoolClosedError(message)

    def _check_usable(self, operation: str) -> anyio.abc.TaskGroup:
        tg = self._check_open(operation)
        if self._shutting_down:
            raise PoolShuttingDownError(f"pool {self.pool!r} is shutting down: {operation}")
        return tg

    # ------------------------------------------------------------------ lifecycle

    async def _prepare(self) -> None:
        await self._register([])

    async def _register(self, workers: Iterable[str]) -> None:
        sent = anyio.current_time()
        reply = await self._io.run("register", self.id, self._ttl_ms, *workers)
        if text(reply[0]) == "shutdown":
            raise PoolShuttingDownError(f"pool {self.pool!r} is shutting down: cannot join")
        self._lease_until = sent + FENCE_FRACTION * self._options.worker_ttl
        self._update_membership(Membership.from_flat(reply[1:]))

    async def _start(self, tg: anyio.abc.TaskGroup) -> None:
        tg.start_soon(self._read_loop)
        tg.start_soon(self._admission_loop)
        tg.start_soon(self._heartbeat_loop)
        if not self.client_only:
            tg.start_soon(self._ack_loop)
            tg.start_soon(self._release_loop)
            tg.start_soon(self._place_loop)
            tg.start_soon(self._rebalance_loop)
            tg.start_soon(self._fence_watchdog)

    async def _stop(self) -> None:
        self._closing = True
        with anyio.CancelScope(shield=True):
            if self._shutting_down or self._state is State.OPENING:
                return
            workers = list(self._workers.values())
            with anyio.move_on_after(self._options.worker_shutdown_ttl):
                await self._stop_all_locally(workers)
            cleanup = min(CLEANUP_TIMEOUT, self._options.worker_ttl)
            with anyio.move_on_after(cleanup):
                await self._flush_acks()
            try:
                with anyio.fail_after(cleanup):
                    await self._io.run("remove", self.id, "1", *[w.id for w in workers])
            except Exception as exc:
                if not is_transient(exc) and not isinstance(exc, TimeoutError):
                    raise
                self._logger.warning(
                    "pool %s: node %s could not leave cleanly (%r); the pool reaps it after "
                    "worker_ttl",
                    self.pool,
                    self.id,
                    exc,
                )
            for worker in workers:
                worker._cancel()

    def _finish(self) -> None:
        for waiter in self._waiters.values():
            waiter.event.set()

    # ------------------------------------------------------------------ workers

    async def add_worker(self, handler: JobHandler) -> Worker:
        """Add a worker running ``handler`` to this node (and to the pool's routing).

        Args:
            handler: A :class:`JobHandler` (``start`` and ``stop`` coroutines), e.g. one
                made by :func:`job_tasks`.

        Returns:
            The new :class:`Worker`; jobs whose key now routes to it move to it (each is
            stopped on its old worker first).

        Raises:
            PoolError: The node is client-only.
            TypeError: ``handler`` lacks ``start`` or ``stop``.
            PoolClosedError: The node's block is not running.
            RedisUnavailableError: Redis could not be reached.
        """
        tg = self._check_usable("add_worker")
        if self.client_only:
            raise PoolError(f"node {self.id} is client-only: it cannot run workers")
        for method in ("start", "stop"):
            if not callable(getattr(handler, method, None)):
                raise TypeError(f"handler must have an async {method}() method")
        worker = Worker(self, _new_id(), handler)
        await tg.start(worker._run)
        self._workers[worker.id] = worker
        try:
            await self._register([w.id for w in self._workers.values()])
        except BaseException:
            del self._workers[worker.id]
            worker._cancel()
            raise
        return worker

    async def remove_worker(self, worker: Worker) -> None:
        """Remove ``worker``: stop its jobs (its handler's ``stop``), then hand them over.

        Raises:
            ValueError: ``worker`` does not belong to this node.
            PoolClosedError: The node's block is not running.
            RedisUnavailableError: Redis could not be reached (the worker is stopped anyway
                and reaped when this node leaves).
        """
        self._check_open("remove_worker")
        if self._workers.get(worker.id) is not worker:
            raise ValueError(f"worker {worker.id} is not a worker of node {self.id}")
        del self._workers[worker.id]
        worker.removed = True
        try:
            await self._stop_all_locally([worker])
            await self._flush_acks()
            await self._io.run("remove", self.id, "0", worker.id)
        finally:
            worker._cancel()
        self._wake_heartbeat.set()

    async def workers(self) -> list[WorkerInfo]:
        """Every worker of the pool, as Redis records them (sorted by id).

        Raises:
            PoolClosedError: The node's block is not running.
            RedisUnavailableError: Redis could not be reached.
        """
        self._check_open("workers")
        found = await self._io.workers()
        return [WorkerInfo(w, n) for w, n in sorted(found.items())]

    def local_workers(self) -> list[Worker]:
        """This node's workers (no I/O)."""
        return list(self._workers.values())

    # ------------------------------------------------------------------ jobs

    async def dispatch_job(self, key: str, payload: bytes) -> None:
        """Start a job: returns once the worker that routing chose has started it.

        Concurrent calls on one node are admitted together, in one script call per batch.

        Args:
            key: The job's key, unique in the pool (1 to 1024 characters, no NUL).
            payload: Bytes for the handler (``Job.payload``).

        Raises:
            InvalidJobKeyError: Bad key (a ``ValueError``, before any I/O): also one that
                would not read back unchanged, e.g. a lone surrogate ``"\\ud800"``.
            TypeError: ``key`` is not a ``str`` or ``payload`` not bytes (before any I/O).
            JobExistsError: A job with this key exists.
            QueueFullError: ``max_queued_jobs`` jobs wait to start.
            JobStartError: The handler's ``start`` raised (its message is kept).
            DispatchTimeoutError: No worker took the job within ``ack_grace_period``; it was
                withdrawn and will not start. (Once a worker took it, the call waits for its
                ``start`` to return.)
            PoolShuttingDownError: The pool is shutting down.
            PoolClosedError: The node's block is not running.
            RedisUnavailableError: Redis could not be reached within ``ack_grace_period``
                (whether the job was admitted is then unknown: check with :meth:`job`), or
                while withdrawing a job no worker took in time (whether it was withdrawn is
                then unknown too).
            RedisCommandError: Redis rejected the dispatch or the withdrawal (an ACL denial,
                ``OOM``, ``READONLY`` on a replica), with the client's error chained.
            PoolError: The membership changed on every one of 20 routing attempts of one
                batch (not seen in practice).

        Cancellation:
            If the call is cancelled after the job was admitted, the job is withdrawn if no
            worker took it yet; otherwise it runs.
        """
        validate_key(key)
        data = validate_payload(payload)
        wait = self._options.ack_grace_period
        self._check_usable("dispatch_job")
        token = _new_id()
        waiter = self._waiters[token] = _Waiter()
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
            if not item.status and item.error is None:
                item.abandoned = True
                if waiter.event.is_set():  # woken by the node's closing
                    self._check_open("dispatch_job")
                raise RedisUnavailableError(
                    f"pool {self.pool!r}: dispatch of {key!r}: no answer from Redis within {wait}s"
                )
            if item.error is not None:
                raise item.error
            status = item.status
            if status == "exists":
                raise JobExistsError(f"job {key!r} already exists in pool {self.pool!r}", key=key)
            if status == "full":
                raise QueueFullError(
                    f"pool {self.pool!r}: max_queued_jobs={self._options.max_queued_jobs} jobs "
                    "wait to start; retry later",
                    key=key,
                )
            if status == "shutdown":
                raise PoolShuttingDownError(f"pool {self.pool!r} is shutting down", key=key)
            self._counts["dispatched"] += 1
            await self._await_start(key, token, waiter, wait, item.admitted_at + wait)
            settled = True
        finally:
            del self._waiters[token]
            item.abandoned = True
            if not settled and item.status in ("sent", "local"):
                # Cancelled while waiting: withdraw unless a worker took it.
                await self._withdraw(key, token)

    async def _admission_loop(self) -> None:
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
            item.error = error
            item.waiter.event.set()
        if not batch:
            return
        try:
            for _ in range(20):
                members = self._membership
                args: list[str | bytes] = []
                locals_: list[Worker | None] = []
                for item in batch:
                    target = _routing.owner(item.key, members.workers) or ""
                    local = self._local_worker(target)
                    locals_.append(local)
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
                        self.id,
                        members.epoch,
                        str(self._options.max_queued_jobs),
                        self._take_trim(),
                        *args,
                    )
                status = text(reply[0])
                if status != "stale":
                    break
                self._update_membership(Membership.from_flat(reply[1:]))
            else:  # pragma: no cover - needs 20 membership changes during one batch
                raise PoolError(f"pool {self.pool!r}: membership changes too fast to route")
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                exc = RedisUnavailableError(
                    f"pool {self.pool!r}: no answer from Redis to a dispatch within "
                    f"{self._options.ack_grace_period}s"
                )
            for item in batch:
                item.error = exc
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
                job = Job(item.key, item.payload, ms_to_datetime(int(created)), False, self.id,
                          local.id)  # fmt: skip
                local._enqueue(
                    item.key, functools.partial(local._start_job, job, token, members.epoch)
                )
                result = "local"
            item.status = result
            if result in ("sent", "local"):
                item.admitted_at = admitted_at
                if not item.abandoned:
                    # The caller now waits for the start, ack_grace_period from here.
                    item.scope.deadline = deadline
            else:
                item.waiter.event.set()
            if item.abandoned and result == "sent" and self._task_group is not None:
                # Its caller gave up while the batch was in flight: withdraw it for them.
                self._task_group.start_soon(self._withdraw, item.key, item.token)

    async def _withdraw(self, key: str, token: str) -> None:
        with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True):
            try:
                await self._io.run("withdraw", key, token)
            except Exception as exc:
                self._logger.warning("pool %s: withdrawing %r failed: %r", self.pool, key, exc)

    def _local_worker(self, worker_id: str) -> Worker | None:
        """This node's worker ``worker_id`` if it can take a start right now."""
        worker = self._workers.get(worker_id)
        if worker is None or worker.removed or self._closing or self._fenced:
            return None
        if self._shutting_down or self.client_only:
            return None
        return worker

    async def _await_start(
        self, key: str, token: str, waiter: _Waiter, wait: float, deadline: float
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
                    f"pool {self.pool!r}: no worker took job {key!r} within {wait}s; it was "
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

    async def stop_job(self, key: str) -> None:
        """Stop a job: returns once its worker's ``stop`` returned and the job is gone.

        A call that finds another ``stop_job`` of the same job under way waits for that one
        and returns when the job is gone (the other call reports the handler's error, if any).

        Raises:
            InvalidJobKeyError, TypeError: Bad key, as for :meth:`dispatch_job`.
            JobNotFoundError: No job with this key.
            JobStopError: The handler's ``stop`` raised (the job is removed anyway).
            PoolClosedError: The node's block is not running.
            RedisUnavailableError: Redis could not be reached.
        """
        validate_key(key)
        self._check_open("stop_job")
        token = _new_id()
        waiter = self._waiters[token] = _Waiter()
        try:
            attempt = 0
            while True:
                status = text(await self._io.run("stop", key, self.id, token))
                if status == "notfound" and attempt > 0:
                    # Another stop_job was stopping it when this one came: it is stopped.
                    return
                if status == "notfound":
                    raise JobNotFoundError(f"no job {key!r} in pool {self.pool!r}", key=key)
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
            del self._waiters[token]

    async def notify_worker(self, key: str, payload: bytes) -> None:
        """Send ``payload`` to the handler running ``key`` (``handle_notification``).

        Returns once the handler returned. A job between workers (moving, retrying) is
        notified as soon as it has a worker again, within ``ack_grace_period``.

        Raises:
            InvalidJobKeyError, TypeError: Bad key or payload, as for :meth:`dispatch_job`.
            JobNotFoundError: No job with this key (or it failed for good).
            NotificationError: The handler raised, or has no ``handle_notification``.
            DispatchTimeoutError: No answer within ``ack_grace_period``.
            PoolClosedError: The node's block is not running.
            RedisUnavailableError: Redis could not be reached.
        """
        validate_key(key)
        data = validate_payload(payload)
        self._check_open("notify_worker")
        token = _new_id()
        waiter = self._waiters[token] = _Waiter()
        grace = self._options.ack_grace_period
        try:
            with anyio.move_on_after(grace) as scope:
                attempt = 0
                while True:
                    status = text(await self._io.run("notify", key, self.id, token, data))
                    if status == "notfound":
                        raise JobNotFoundError(f"no job {key!r} in pool {self.pool!r}", key=key)
                    if status == "sent":
                        break
                    await anyio.sleep(backoff_delay(attempt, cap=0.5))
                    attempt += 1
                await waiter.event.wait()
            if scope.cancelled_caught:
                raise DispatchTimeoutError(
                    f"pool {self.pool!r}: no answer to the notification of {key!r} within {grace}s",
                    key=key,
                )
            self._check_open("notify_worker")
            if not waiter.ok:
                raise NotificationError(
                    f"notification of job {key!r} failed: {waiter.error}", key=key
                )
        finally:
            del self._waiters[token]

    async def jobs(self) -> list[JobInfo]:
        """Every job of the pool with its state (sorted by key); failed jobs included.

        Raises:
            PoolClosedError: The node's block is not running.
            RedisUnavailableError: Redis could not be reached.
        """
        self._check_open("jobs")
        flat = await self._io.run("jobs", "")
        infos = [parse_record(text(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]
        return sorted(infos, key=lambda info: info.key)

    async def job_keys(self) -> list[str]:
        """The keys of every job of the pool (any state, failed included), sorted."""
        return [info.key for info in await self.jobs()]

    async def job_payload(self, key: str) -> bytes | None:
        """The payload of job ``key``, or ``None`` if there is no such job."""
        validate_key(key)
        self._check_open("job_payload")
        record, payload = await self._io.run("jobs", key)
        if not record:
            return None
        return bytes(payload or b"")

    async def job(self, key: str) -> JobInfo | None:
        """What the pool records about job ``key`` (``None`` if there is no such job)."""
        validate_key(key)
        self._check_open("job")
        record, _ = await self._io.run("jobs", key)
        return None if not record else parse_record(key, record)

    # ------------------------------------------------------------------ tickers

    def open_ticker(self, name: str, interval: float) -> Ticker:
        """Make a ticker shared by the pool's nodes; enter it with ``async with``.

        Each tick reaches one node of the pool: one whose iteration waits for a tick. Ticks
        are never dropped: when every node is busy, a due tick waits for the first receiver
        to be ready and then stands for every interval that elapsed (:attr:`Tick.count`).
        Nodes that open a ticker of the same name with another interval replace the shared
        schedule.

        Args:
            name: The ticker's name (the naming rule of pools).
            interval: Seconds between ticks (> 0).

        Returns:
            The :class:`Ticker`, not yet entered.

        Raises:
            InvalidNameError / ValueError: Bad name or interval (before any I/O).
            PoolClosedError: The node's block is not running.

        Cancellation:
            The ticker owns a task group; leaving its block stops it.
        """
        validate_name("ticker", name)
        seconds = validate_duration("interval", interval, allow_zero=False)
        assert seconds is not None
        self._check_usable("open_ticker")
        return Ticker._create(self, name, seconds)

    async def schedule(self, producer: JobProducer, interval: float) -> None:
        """Run ``producer`` on the pool's nodes, one node at a time, every ``interval``.

        On each tick of the ticker ``schedule:<producer.name>`` (which reaches one node of
        the pool), that node calls ``await producer.plan()`` and applies the
        :class:`JobPlan`: dispatches ``start`` (a key that already runs counts as started),
        stops ``stop``, or with ``stop_all`` every job this producer started (recorded in
        Redis) that is not in ``start``. Errors of ``plan`` are logged and the next tick
        tries again. Returns once the schedule runs on this node.

        Raises:
            PoolClosedError: The node's block is not running.
            PoolError: The node is client-only.

        Cancellation:
            The scheduler's task lives in the node's task group until the node closes.
        """
        tg = self._check_usable("schedule")
        validate_name("producer", producer.name)
        validate_duration("interval", interval, allow_zero=False)
        await tg.start(run_schedule, self, producer, interval, self._logger)

    # ------------------------------------------------------------------ shutdown

    async def shutdown(self) -> None:
        """Shut the whole pool down: every node stops every job, then the pool is removed.

        Every live node (this one included) calls its handlers' ``stop`` for each of its
        jobs and acknowledges; this call waits for all of them, at most
        ``worker_shutdown_ttl`` (a dead node is not waited for), then deletes the pool's
        keys. Afterwards every node of the pool raises :class:`PoolShuttingDownError` for
        dispatches; new nodes may join again after ``2 * worker_ttl``.

        Raises:
            PoolClosedError: The node's block is not running.
            RedisUnavailableError: Redis could not be reached.
        """
        self._check_open("shutdown")
        nodes = [text(n) for n in await self._io.run("shutdown", self.id)]
        with anyio.move_on_after(self._options.worker_shutdown_ttl):
            attempt = 0
            while True:
                waiting = await self._io.run("shutdown_status", *nodes)
                if not waiting:
                    break
                await anyio.sleep(min(0.2, 0.01 * (attempt + 1)))
                attempt += 1
        tombstone = max(1000, round(2000 * self._options.worker_ttl))
        await self._io.run("destroy", str(tombstone))
        self._shutting_down = True

    async def _handle_shutdown(self) -> None:
        if self._shutdown_handled:
            return
        self._shutdown_handled = True
        self._shutting_down = True
        workers = list(self._workers.values())
        keys = [key for w in workers for key in w.job_keys()]
        with anyio.move_on_after(self._options.worker_shutdown_ttl):
            await self._stop_all_locally(workers)
        await self._retrying("shutdown ack", lambda: self._io.run("shutdown_ack", self.id, *keys))

    # ------------------------------------------------------------------ internals

    def _take_trim(self) -> str:
        trim, self._trim_below = self._trim_below, ""
        return trim

    def _update_membership(self, membership: Membership) -> None:
        if int(membership.epoch) > int(self._membership.epoch):
            self._membership = membership
            self._rebalance_needed.set()

    async def _retrying(self, what: str, call: Any) -> Any:
        """Run ``call()`` until it succeeds, retrying transient Redis errors with backoff."""
        attempt = 0
        while True:
            try:
                return await call()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                delay = backoff_delay(attempt, cap=min(1.0, self._options.worker_ttl / 4))
                attempt += 1
                self._logger.warning(
                    "pool %s: node %s: %s failed (%r); retrying in %.2fs",
                    self.pool,
                    self.id,
                    what,
                    exc,
                    delay,
                )
                await anyio.sleep(delay)

    # --- the node's stream

    async def _read_loop(self) -> None:
        """Read this node's stream (one blocking connection) and act on each message."""
        while True:
            entries = await self._retrying(
                "reading the node stream",
                lambda: self._io.read(self.id, self._cursor, count=BATCH, block_ms=self._block_ms),
            )
            if not entries:
                continue
            self._cursor = entries[-1][0]
            self._trim_below = next_id(self._cursor)
            starts: list[Message] = []
            for entry_id, fields in entries:
                try:
                    message = decode_message(entry_id, fields)
                except MalformedMessageError as exc:
                    self._counts["malformed"] += 1
                    self._logger.error("pool %s: node %s: %s (skipped)", self.pool, self.id, exc)
                    continue
                if message.type == "s":
                    starts.append(message)
                    continue
                if starts:
                    await self._take(starts)
                    starts = []
                self._handle(message)
            if starts:
                await self._take(starts)

    def _handle(self, message: Message) -> None:
        f = message.fields
        if message.type == "r":
            self._resolve(f["d"], f["o"] == "1", f.get("e", ""))
        elif message.type == "m":
            self._update_membership(Membership.from_message(f["M"]))
            self._wake_heartbeat.set()
        elif message.type == "q":
            if self._task_group is not None:
                self._task_group.start_soon(self._handle_shutdown)
        elif message.type in ("x", "n"):
            worker = self._workers.get(f["w"])
            reply = reply_spec(f["d"], f["r"])
            if worker is None:
                # Not ours any more (removed): answer so the caller does not wait.
                kind = message.type
                self._ack(kind, f["k"], f["w"], f["g"], None if kind == "x" else "no worker", reply)
                return
            key, token, payload = f["k"], f["g"], message.payload
            if message.type == "x":
                worker._enqueue(key, lambda: worker._stop_job(key, token, reply))
            else:
                worker._enqueue(key, lambda: worker._notify(key, token, payload, reply))

    def _resolve(self, token: str, ok: bool, error: str) -> None:
        """Hand a reply to the caller waiting on ``token`` (if it still waits)."""
        waiter = self._waiters.get(token)
        if waiter is not None and not waiter.event.is_set():
            waiter.ok = ok
            waiter.error = error
            waiter.event.set()

    async def _take(self, starts: list[Message]) -> None:
        """Take a batch of starts in one script call, then start the taken ones."""
        if self.client_only or self._closing or self._shutting_down:
            return
        if self._fenced:
            # Not now (the lease lapsed), but not dropped either: recovery's register may
            # already have run and another node placed a job on our worker, a start valid
            # after recovery. Recovery takes them all; the ones its remove made obsolete
            # (every start assigned before it) come back 'stale' from pool_take.
            self._deferred_starts += starts
            return
        args: list[str] = []
        for m in starts:
            args += [m.fields["k"], m.fields["w"], m.fields["g"]]
        statuses = await self._retrying(
            "taking starts", lambda: self._io.run("take", self.id, self._take_trim(), *args)
        )
        for message, status in zip(starts, statuses, strict=True):
            f = message.fields
            worker = self._workers.get(f["w"])
            if worker is None:
                continue
            state = text(status)
            key, token = f["k"], f["g"]
            if state == "stale":
                continue
            if state == "dup":
                local = worker._jobs.get(key)
                if local is not None:
                    if local.running:
                        self._ack("s", key, worker.id, token, None)
                    continue
                # Taken for this worker and never started here: an earlier attempt of this
                # very call ran in Redis but its reply was lost. Start it now, or nobody will.
            job = Job(
                key=key,
                payload=message.payload,
                created_at=ms_to_datetime(int(f["c"])),
                requeued=f["q"] == "1",
                node_id=f["o"],
                worker_id=worker.id,
            )
            worker._enqueue(key, functools.partial(worker._start_job, job, token, f.get("E", "")))

    # --- acknowledgements, in batches

    def _ack(
        self, kind: str, key: str, worker: str, token: str, error: str | None, reply: str = ""
    ) -> None:
        """Queue an outcome for the ack task (no I/O here)."""
        if kind == "s" and error is None:
            self._counts["started"] += 1
        self._acks += [
            kind,
            key,
            worker,
            token,
            "0" if error is not None else "1",
            error or "",
            reply,
        ]
        self._acks_ready.set()

    async def _ack_loop(self) -> None:
        while True:
            await self._acks_ready.wait()
            self._acks_ready = anyio.Event()
            if not self._flushing:
                await self._flush_acks()

    async def _flush_acks_here(self) -> None:
        """Send queued outcomes from the calling task when no batch is in flight (saves a
        task switch on the sequential path); otherwise the ack task sends them next."""
        if not self._flushing and self._acks:
            with anyio.CancelScope(shield=True):
                await self._flush_acks()

    async def _flush_acks(self) -> None:
        self._flushing = True
        try:
            await self._flush_acks_unguarded()
        finally:
            self._flushing = False
            if self._acks:
                self._acks_ready.set()

    async def _flush_acks_unguarded(self) -> None:
        while self._acks:
            batch, self._acks = self._acks, []
            statuses, mine = await self._retrying(
                "acknowledging", functools.partial(self._send_acks, batch)
            )
            for i in range(0, len(mine), 3):
                self._resolve(text(mine[i]), text(mine[i + 1]) == "1", text(mine[i + 2]))
            for i, status in enumerate(statuses):
                kind, key, worker_id, token = batch[7 * i : 7 * i + 4]
                if text(status) == "stale" and kind == "s":
                    # This worker no longer holds the job (it moved while starting): stop it
                    # here so that it never runs twice.
                    worker = self._workers.get(worker_id)
                    if worker is not None:
                        worker._enqueue(key, functools.partial(worker._stop_locally, key, token))

    async def _send_acks(self, batch: list[str]) -> Any:
        ttl_ms = self._options.worker_ttl * 1000
        return await self._io.run(
            "ack",
            str(MAX_START_ATTEMPTS),
            str(round(RETRY_BASE_DELAY * 1000)),
            str(round(ttl_ms)),
            self.id,
            *batch,
        )

    # --- liveness

    async def _heartbeat_loop(self) -> None:
        """Renew liveness every ``worker_ttl/5`` (sooner when woken); placement is handed to
        the placement task so that nothing delays the next heartbeat."""
        ttl = self._options.worker_ttl
        period = ttl / HEARTBEATS_PER_TTL
        sent = anyio.current_time()
        while True:
            with anyio.move_on_after(max(0.0, sent + period - anyio.current_time())):
                await self._wake_heartbeat.wait()
            self._wake_heartbeat = anyio.Event()
            if self._shutting_down:
                await anyio.sleep(period)
                continue
            sent = anyio.current_time()
            try:
                with anyio.fail_after(ttl / 2):
                    reply = await self._io.run(
                        "heartbeat",
                        self.id,
                        self._ttl_ms,
                        self._membership.epoch,
                        self._take_trim(),
                        "0" if self.client_only else "1",
                        str(BATCH),
                    )
            except (TimeoutError, RedisUnavailableError) as exc:
                self._logger.warning(
                    "pool %s: node %s: heartbeat failed (%r)", self.pool, self.id, exc
                )
                continue
            status = text(reply[0])
            if status == "shutdown":
                if self._task_group is not None:
                    self._task_group.start_soon(self._handle_shutdown)
                continue
            if status == "unknown" or self._fenced:
                # Declared dead (or we fenced ourselves): stop everything we run, give our
                # jobs back and register again (a paused node never goes deaf).
                try:
                    await self._recover()
                except (TimeoutError, RedisUnavailableError) as exc:
                    self._logger.warning(
                        "pool %s: node %s: re-registering failed (%r); retrying",
                        self.pool,
                        self.id,
                        exc,
                    )
                except PoolShuttingDownError:
                    if self._task_group is not None:
                        self._task_group.start_soon(self._handle_shutdown)
                continue
            self._lease_until = sent + FENCE_FRACTION * ttl
            unassigned, members = reply[1], reply[2]
            if members:
                self._update_membership(Membership.from_flat(members))
            if unassigned and not self.client_only:
                self._to_place.update(text(k) for k in unassigned)
                self._place_ready.set()

    async def _place_loop(self) -> None:
        while True:
            await self._place_ready.wait()
            self._place_ready = anyio.Event()
            keys, self._to_place = sorted(self._to_place), set()
            await self._place(keys)

    async def _fence_watchdog(self) -> None:
        """Stop this node's jobs once its lease lapsed (self-fencing, guarantee 3)."""
        while True:
            await anyio.sleep_until(self._lease_until)
            if anyio.current_time() >= self._lease_until and not self._fenced:
                await self._fence()
            else:
                await anyio.sleep(self._options.worker_ttl / (2 * HEARTBEATS_PER_TTL))

    async def _fence(self) -> None:
        self._fenced = True
        self._fencing_done = anyio.Event()
        self._counts["fenced"] += 1
        self._logger.error(
            "pool %s: node %s could not renew its liveness within worker_ttl: stopping its "
            "jobs before other nodes restart them",
            self.pool,
            self.id,
        )
        try:
            await self._stop_all_locally(list(self._workers.values()))
        finally:
            self._fencing_done.set()

    async def _recover(self) -> None:
        if not self._fenced:
            await self._fence()
        await self._fencing_done.wait()
        workers = [w.id for w in self._workers.values()]
        sent = anyio.current_time()
        with anyio.fail_after(self._options.worker_ttl):
            await self._io.run("remove", self.id, "0", *workers)
            await self._register(workers)
        self._lease_until = sent + FENCE_FRACTION * self._options.worker_ttl
        self._fenced = False
        self._logger.warning("pool %s: node %s re-registered after fencing", self.pool, self.id)
        deferred, self._deferred_starts = self._deferred_starts, []
        if deferred and self._task_group is not None:
            self._task_group.start_soon(self._take, deferred)
        self._wake_heartbeat.set()

    async def _stop_all_locally(self, workers: list[Worker]) -> None:
        """Stop every job of ``workers`` through their key queues; wait for all of them."""
        async with anyio.create_task_group() as tg:
            for worker in workers:
                for key in list(worker._jobs):
                    done = anyio.Event()

                    async def op(w: Worker = worker, k: str = key, d: anyio.Event = done) -> None:
                        try:
                            await w._stop_locally(k)
                        finally:
                            d.set()

                    worker._enqueue(key, op)
                    tg.start_soon(done.wait)

    # --- placement and rebalance

    async def _place(self, keys: list[str]) -> None:
        for _ in range(10):
            members = self._membership
            if not members.workers:
                return
            args: list[str] = []
            for key in keys:
                target = _routing.owner(key, members.workers)
                assert target is not None
                args += [key, target, members.workers[target]]
            reply = await self._retrying(
                "placing jobs", functools.partial(self._io.run, "place", members.epoch, *args)
            )
            if text(reply[0]) == "ok":
                return
            self._update_membership(Membership.from_flat(reply[1:]))

    def _check_placement(self, worker: Worker, key: str, epoch: str) -> None:
        """After a start: move the job if the membership changed while it started (``epoch``:
        the one the start was routed with)."""
        if epoch == self._membership.epoch:
            return
        target = _routing.owner(key, self._membership.workers)
        if target is not None and target != worker.id and not worker.removed:
            worker._enqueue(key, lambda: self._move(worker, key))

    async def _rebalance_loop(self) -> None:
        """Stop the jobs that routing now gives to other workers, then release them."""
        while True:
            await self._rebalance_needed.wait()
            self._rebalance_needed = anyio.Event()
            if self._closing or self._fenced or self._shutting_down:
                continue
            workers = self._membership.workers
            if not workers:
                continue
            for worker in list(self._workers.values()):
                placement = {key: worker.id for key in worker._jobs}
                for key in _routing.moves(placement, workers):
                    worker._enqueue(key, functools.partial(self._move, worker, key))

    async def _move(self, worker: Worker, key: str) -> None:
        local = worker._jobs.get(key)
        if local is None or self._closing or self._fenced:
            return
        target = _routing.owner(key, self._membership.workers)
        if target is None or target == worker.id:
            return
        token = local.token
        # Stop before start (guarantee 3): the job is released only once stopped here.
        await worker._stop_locally(key, token)
        self._released.setdefault(worker.id, set()).add(f"{key}\0{token}")
        self._release_ready.set()

    async def _release_loop(self) -> None:
        while True:
            await self._release_ready.wait()
            self._release_ready = anyio.Event()
            await self._flush_acks()
            released, self._released = self._released, {}
            keys: list[str] = []
            for worker_id, items in released.items():
                args: list[str] = []
                for item in items:
                    key, _, token = item.partition("\0")
                    args += [key, token]
                    keys.append(key)
                await self._retrying(
                    "releasing jobs", functools.partial(self._io.run, "release", worker_id, *args)
                )
            if keys:
                await self._place(keys)

    def statistics(self) -> NodeStatistics:
        """Counters since the block started, and the node's current view (no I/O)."""
        return NodeStatistics(
            dispatched=self._counts["dispatched"],
            started=self._counts["started"],
            fenced=self._counts["fenced"],
            malformed=self._counts["malformed"],
            workers=len(self._workers),
            running=sum(len(w.job_keys()) for w in self._workers.values()),
            epoch=int(self._membership.epoch),
            is_fenced=self._fenced,
        )


def open_node(
    client: Client,
    name: str,
    *,
    worker_ttl: float = DEFAULT_WORKER_TTL,
    worker_shutdown_ttl: float = DEFAULT_WORKER_SHUTDOWN_TTL,
    ack_grace_period: float = DEFAULT_ACK_GRACE_PERIOD,
    max_queued_jobs: int = DEFAULT_MAX_QUEUED_JOBS,
    client_only: bool = False,
    logger: logging.Logger | None = None,
) -> Node:
    """Make a node of pool ``name``; enter it with ``async with`` to join the pool.

    Every option is checked here, before any I/O.

    Args:
        client: An entered client (see :func:`pulse_trio.connect`).
        name: The pool's name (1 to 512 characters, none of space, NUL, ``*?[]``).
        worker_ttl: Liveness TTL in seconds: a node that cannot renew its liveness for this
            long is dead to the pool (its jobs restart elsewhere within about 1.3 times this)
            and stops its own jobs first (after 0.7 times this). Default 30.
        worker_shutdown_ttl: Bound on handing over this node's jobs when its block ends,
            and on waiting for all nodes in :meth:`Node.shutdown`, in seconds. Default 120.
        ack_grace_period: How long a dispatch waits for a worker to take its job before
            withdrawing it, in seconds. Default 20.
        max_queued_jobs: Jobs admitted and not yet running above which dispatches raise
            :class:`QueueFullError`. Default 1000.
        client_only: Dispatch, stop, notify and list only: no workers. Default False.
        logger: Where to log (default: the ``pulse_trio.pool`` logger).

    Returns:
        The :class:`Node`, not yet entered.

    Raises:
        InvalidNameError: ``name`` breaks the naming rule, strict UTF-8 text included (a
            ``ValueError``).
        ValueError: A duration or bound is out of range (the message names it).
        TypeError: An option has the wrong type, or ``client`` is not a :class:`pulse_trio.Client`.

    Cancellation:
        The node owns a task group (see :class:`Node`); leaving the block stops all of it.
    """
    validate_name("pool", name)
    if logger is not None and not isinstance(logger, logging.Logger | logging.LoggerAdapter):
        raise TypeError(f"logger must be a logging.Logger, not {type(logger).__name__}")
    log = logger or logging.getLogger("pulse_trio.pool")
    check_client(client)
    ttl = validate_duration("worker_ttl", worker_ttl, allow_zero=False)
    shutdown_ttl = validate_duration("worker_shutdown_ttl", worker_shutdown_ttl, allow_zero=False)
    grace = validate_duration("ack_grace_period", ack_grace_period, allow_zero=False)
    assert ttl is not None
    assert shutdown_ttl is not None
    assert grace is not None
    if isinstance(max_queued_jobs, bool) or not isinstance(max_queued_jobs, int):
        raise TypeError(f"max_queued_jobs must be an int, not {type(max_queued_jobs).__name__}")
    if max_queued_jobs < 1:
        raise ValueError(f"max_queued_jobs must be >= 1, got {max_queued_jobs}")
    if not isinstance(client_only, bool):
        raise TypeError(f"client_only must be a bool, not {type(client_only).__name__}")
    options = _Options(ttl, shutdown_ttl, grace, max_queued_jobs, client_only)
    return Node._create(client, name, options, log)
