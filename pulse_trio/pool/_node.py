"""Pool nodes: :func:`open_node` and :class:`Node`, the public face of a pool member.

A node joins a pool, runs workers (unless client-only), dispatches, stops and notifies jobs,
and keeps its part of the pool alive. :class:`Node` is a thin face over collaborators, each
with one duty and one file, which it makes and wires together (handing each only what it
needs, see ``_node_state.py``):

- ``_dispatch.py``: admission and dispatch (batches of dispatches, the waiting callers,
  withdrawing a timed-out dispatch), stop and notify;
- ``_intake.py``: the node's own stream (reading it, taking starts, routing messages);
- ``_acks.py``: the workers' outcomes, sent in batches;
- ``_liveness.py``: heartbeat, lease, self-fencing and recovery (guarantees 3 and 4);
- ``_placement.py``: placing unassigned jobs, rebalancing, moving and releasing jobs;
- ``_shutdown.py``: closing the node and the pool-wide shutdown.

Workers, tickers and schedules see the node only through the protocols of ``_node_api.py``,
which ``_node_side.NodeSide`` implements. The protocol is in ``docs/pool-protocol.md``.

This file is longer than 600 lines because it holds the whole public API of a node with
its docstrings (over a third of the file) and the wiring of the collaborators; the logic
behind each call is in the collaborator that owns it.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import anyio
import anyio.abc
import attrs

from .. import _metrics
from .._boundary import Client, check_client, text
from .._errors import ClosedError
from .._lifecycle import Service, State
from .._names import required_duration, validate_logger, validate_name
from ._acks import AckBatcher
from ._dispatch import Dispatcher
from ._errors import PoolClosedError, PoolError, PoolShuttingDownError
from ._intake import Intake
from ._liveness import Liveness
from ._node_api import ScheduleHost, TickerHost
from ._node_side import NodeSide
from ._node_state import (
    Counters,
    MembershipView,
    Options,
    Phase,
    Retrier,
    TrimMark,
    Waiters,
    new_id,
)
from ._placement import Placement
from ._protocol import JobInfo, Membership, parse_record, validate_key, validate_payload
from ._redis import PoolRedis
from ._shutdown import Shutdown
from ._ticker import JobProducer, Ticker, run_schedule
from ._worker import JobHandler, Worker, WorkerInfo, stop_all_locally

#: Default liveness TTL of a node and its workers, in seconds.
DEFAULT_WORKER_TTL = 30.0
#: Default bound on handing jobs over when a node closes or the pool shuts down, in seconds.
DEFAULT_WORKER_SHUTDOWN_TTL = 120.0
#: Default time a dispatch waits for a worker to take its job before withdrawing it, seconds.
DEFAULT_ACK_GRACE_PERIOD = 20.0
#: Default bound on jobs admitted and not yet running.
DEFAULT_MAX_QUEUED_JOBS = 1000


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

    def __init__(self, client: Client, name: str, options: Options, logger: logging.Logger) -> None:
        self.id = new_id()
        self.pool = name
        self.client_only = options.client_only
        self._options = options
        self._logger = logger
        self._io = PoolRedis(client, name)
        self._workers: dict[str, Worker] = {}
        self._phase = Phase()
        self._view = MembershipView()
        self._waiters = Waiters()
        self._trim = TrimMark()
        self._counts = Counters(cell=_metrics.pool_cell(name))
        retrying = Retrier(name, self.id, options.worker_ttl, logger)
        self._acks = AckBatcher(
            io=self._io,
            workers=self._workers,
            node_id=self.id,
            worker_ttl=options.worker_ttl,
            waiters=self._waiters,
            counters=self._counts,
            retrying=retrying,
        )
        self._placement = Placement(
            io=self._io,
            node_id=self.id,
            workers=self._workers,
            phase=self._phase,
            view=self._view,
            retrying=retrying,
            flush_acks=self._acks.flush,
        )
        self._shutdown = Shutdown(
            io=self._io,
            workers=self._workers,
            node_id=self.id,
            pool=name,
            options=options,
            logger=logger,
            phase=self._phase,
            retrying=retrying,
            flush_acks=self._acks.flush,
        )
        handle_shutdown = functools.partial(self._spawn, self._shutdown.handle)
        self._liveness = Liveness(
            io=self._io,
            workers=self._workers,
            node_id=self.id,
            pool=name,
            options=options,
            logger=logger,
            phase=self._phase,
            view=self._view,
            trim=self._trim,
            counters=self._counts,
            spawn=self._spawn,
            on_shutdown=handle_shutdown,
            place=self._placement.request,
            # Recovery takes the starts read while fenced (the intake is made below).
            take=lambda starts: self._intake.take(starts),
        )
        self._intake = Intake(
            io=self._io,
            workers=self._workers,
            node_id=self.id,
            pool=name,
            client_only=options.client_only,
            logger=logger,
            phase=self._phase,
            view=self._view,
            trim=self._trim,
            waiters=self._waiters,
            counters=self._counts,
            retrying=retrying,
            ack=self._acks.ack,
            defer=self._liveness.defer,
            wake_heartbeat=self._liveness.wake,
            on_shutdown=functools.partial(self._spawn, self._shutdown.handle_message),
        )
        self._dispatcher = Dispatcher(
            io=self._io,
            workers=self._workers,
            node_id=self.id,
            pool=name,
            options=options,
            logger=logger,
            phase=self._phase,
            view=self._view,
            trim=self._trim,
            waiters=self._waiters,
            counters=self._counts,
            spawn=self._spawn,
            check_open=self._check_open,
        )
        self._side = NodeSide(
            self.id,
            name,
            logger,
            self._io,
            self._phase,
            self._acks,
            self._placement,
            self._check_usable,
            self.dispatch_job,
            self.stop_job,
        )

    def __repr__(self) -> str:
        return (
            f"<pool.Node {self.id} pool={self.pool!r} state={self._state.value} "
            f"workers={len(self._workers)} epoch={self._view.current.epoch}>"
        )

    # The node's view, as tests and debuggers look at it.

    @property
    def _membership(self) -> Membership:
        return self._view.current

    @_membership.setter
    def _membership(self, membership: Membership) -> None:
        self._view.current = membership

    @property
    def _fenced(self) -> bool:
        return self._phase.fenced

    @property
    def _closing(self) -> bool:
        return self._phase.closing

    @property
    def _cursor(self) -> str:
        return self._intake.cursor

    def _closed_error(self, message: str) -> ClosedError:
        return PoolClosedError(message)

    def _check_usable(self, operation: str) -> anyio.abc.TaskGroup:
        tg = self._check_open(operation)
        if self._phase.shutting_down:
            raise PoolShuttingDownError(f"pool {self.pool!r} is shutting down: {operation}")
        return tg

    def _spawn(self, fn: Any, *args: Any) -> None:
        """Start ``fn(*args)`` in the node's task group (nothing once the block ended)."""
        if self._task_group is not None:
            self._task_group.start_soon(fn, *args)

    # ------------------------------------------------------------------ lifecycle

    async def _prepare(self) -> None:
        await self._liveness.register([])

    async def _start(self, tg: anyio.abc.TaskGroup) -> None:
        if not self.client_only:
            _metrics.track_pool_node(self, self.pool)
        tg.start_soon(self._intake.run)
        tg.start_soon(self._dispatcher.run)
        tg.start_soon(self._liveness.run_heartbeat)
        if not self.client_only:
            tg.start_soon(self._acks.run)
            tg.start_soon(self._placement.run_releasing)
            tg.start_soon(self._placement.run_placing)
            tg.start_soon(self._placement.run_rebalancing)
            tg.start_soon(self._liveness.run_fence_watchdog)

    async def _stop(self) -> None:
        await self._shutdown.close(opening=self._state is State.OPENING)

    def _finish(self) -> None:
        self._waiters.release_all()

    def jobs_per_worker(self) -> dict[str, int]:
        """For the metrics: the number of jobs each of this node's workers runs now."""
        return {worker.id: len(worker.job_keys()) for worker in list(self._workers.values())}

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
        worker = Worker(self._side, new_id(), handler)
        await tg.start(worker._run)
        self._workers[worker.id] = worker
        try:
            await self._liveness.register([w.id for w in self._workers.values()])
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
            await stop_all_locally([worker])
            await self._acks.flush()
            await self._io.run("remove", self.id, "0", worker.id)
        finally:
            worker._cancel()
        self._liveness.wake()

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
        self._check_usable("dispatch_job")
        await self._dispatcher.dispatch(key, data)

    async def stop_job(self, key: str) -> None:
        """Stop a job: returns once its worker's ``stop`` returned and the job is gone.

        A call that finds another ``stop_job`` of the same job under way waits for that one
        and returns when the job is gone (the other call reports the handler's error, if any).

        Raises:
            JobNotFoundError: No job with this key.
            JobStopError: The handler's ``stop`` raised (the job is removed anyway).
            PoolClosedError: The node's block is not running.
            RedisUnavailableError: Redis could not be reached.
            InvalidJobKeyError, TypeError: Bad key, as for :meth:`dispatch_job`.
        """
        validate_key(key)
        self._check_open("stop_job")
        await self._dispatcher.stop(key)

    async def notify_worker(self, key: str, payload: bytes) -> None:
        """Send ``payload`` to the handler running ``key`` (``handle_notification``).

        Returns once the handler returned. A job between workers (moving, retrying) is
        notified as soon as it has a worker again, within ``ack_grace_period``.

        Raises:
            JobNotFoundError: No job with this key (or it failed for good).
            NotificationError: The handler raised, or has no ``handle_notification``.
            DispatchTimeoutError: No answer within ``ack_grace_period``.
            PoolClosedError: The node's block is not running.
            RedisUnavailableError: Redis could not be reached.
            InvalidJobKeyError, TypeError: Bad key or payload, as for :meth:`dispatch_job`.
        """
        validate_key(key)
        data = validate_payload(payload)
        self._check_open("notify_worker")
        await self._dispatcher.notify(key, data)

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
        seconds = required_duration("interval", interval)
        self._check_usable("open_ticker")
        host: TickerHost = self._side
        return Ticker._create(host, name, seconds)

    async def schedule(self, producer: JobProducer, interval: float) -> None:
        """Run ``producer`` on the pool's nodes, one node at a time, every ``interval``.

        On each tick of the ticker ``schedule:<producer.name>`` (which reaches one node of
        the pool), that node calls ``await producer.plan()`` and applies the
        :class:`JobPlan`: dispatches ``start`` (a key that already runs counts as started),
        stops ``stop``, or with ``stop_all`` every job this producer started (recorded in
        Redis) that is not in ``start``. Errors of ``plan`` are logged and the next tick
        tries again. Returns once the schedule runs on this node.

        Raises:
            InvalidNameError / ValueError: Bad producer name or interval (before any I/O).
            PoolClosedError: The node's block is not running.
            PoolError: The node is client-only.

        Cancellation:
            The scheduler's task lives in the node's task group until the node closes. It
            ends as soon as the node starts closing (or the pool shuts down): a tick that
            comes meanwhile is not applied here, and is not logged as a failure.
        """
        validate_name("producer", producer.name)
        required_duration("interval", interval)
        tg = self._check_usable("schedule")
        host: ScheduleHost = self._side
        await tg.start(run_schedule, host, self.open_ticker, producer, interval, self._logger)

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
        await self._shutdown.shutdown()

    def statistics(self) -> NodeStatistics:
        """Counters since the block started, and the node's current view (no I/O)."""
        return NodeStatistics(
            dispatched=self._counts.dispatched,
            started=self._counts.started,
            fenced=self._counts.fenced,
            malformed=self._counts.malformed,
            workers=len(self._workers),
            running=sum(len(w.job_keys()) for w in self._workers.values()),
            epoch=int(self._view.current.epoch),
            is_fenced=self._phase.fenced,
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
    validate_logger(logger)
    log = logger or logging.getLogger("pulse_trio.pool")
    check_client(client)
    ttl = required_duration("worker_ttl", worker_ttl)
    shutdown_ttl = required_duration("worker_shutdown_ttl", worker_shutdown_ttl)
    grace = required_duration("ack_grace_period", ack_grace_period)
    if isinstance(max_queued_jobs, bool) or not isinstance(max_queued_jobs, int):
        raise TypeError(f"max_queued_jobs must be an int, not {type(max_queued_jobs).__name__}")
    if max_queued_jobs < 1:
        raise ValueError(f"max_queued_jobs must be >= 1, got {max_queued_jobs}")
    if not isinstance(client_only, bool):
        raise TypeError(f"client_only must be a bool, not {type(client_only).__name__}")
    options = Options(ttl, shutdown_ttl, grace, max_queued_jobs, client_only)
    return Node._create(client, name, options, log)
