"""Distributed tickers (:meth:`Node.open_ticker`) and schedulers (:meth:`Node.schedule`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, Self

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .. import _metrics
from .._boundary import is_transient
from .._errors import ClosedError
from .._lifecycle import Service
from .._retry import backoff_delay
from ._errors import JobExistsError, JobNotFoundError, PoolClosedError, PoolShuttingDownError
from ._node_api import ScheduleHost, TickerHost
from ._protocol import ms_to_datetime, validate_key
from ._redis import ScheduleRecord

#: Longest time a claim, or handing a tick back when the ticker closes, may take (seconds):
#: both run shielded from cancellation so that a claimed tick is never lost to it.
SHIELDED_CALL_TIMEOUT = 5.0


@attrs.frozen
class Tick:
    """One tick of a :class:`Ticker`.

    Attributes:
        name: The ticker's name.
        at: When the (first of the) tick(s) it stands for was due (UTC, Redis's clock).
        count: How many intervals this tick stands for: 1 when it was delivered on time;
            more when every node of the pool was busy for longer than an interval, in
            which case the ticks that piled up are delivered together as this one.
    """

    name: str
    at: datetime
    count: int


class Ticker(Service):
    """A ticker shared by the nodes of a pool: made by :meth:`Node.open_ticker`.

    Every tick reaches one node. A node competes for a tick only while its iteration waits
    for one, so a busy node leaves ticks to idle ones; a tick is never dropped: when every
    node is busy it waits (in Redis) for the first receiver to be ready, which gets it with
    :attr:`Tick.count` saying how many intervals elapsed.

    A receiver cancelled before its tick is due claims nothing (the tick stays in Redis for
    the other nodes). A tick claimed just as its receiver was cancelled is kept for the next
    iteration (a buffer of one; no other tick is claimed meanwhile). If the ticker closes
    first, closing hands that tick back to the pool (as does a claim still in flight when it
    closes): the next receiver on any node gets it, with its own :attr:`Tick.at` and
    :attr:`Tick.count`. Only if Redis cannot be reached while closing (within 5 s) is the tick
    lost, and then a warning says so; ticks handed back to a ticker whose interval was
    changed meanwhile are discarded with the old schedule.

    Cancellation:
        The ticker's task (waiting for the due time and claiming ticks) lives in its own
        task group, stopped when the block ends. The schedule itself stays in Redis for the
        pool's other nodes.
    """

    _kind = "ticker"
    _factory = "Node.open_ticker(name, interval)"

    def __init__(self, host: TickerHost, name: str, interval: float) -> None:
        self.name = name
        self.interval = interval
        self._host = host
        self._interval_ms = str(max(1, round(interval * 1000)))
        #: The one-tick buffer, made when entered (a ticker never entered holds nothing).
        self._send: MemoryObjectSendStream[Tick] | None = None
        self._recv: MemoryObjectReceiveStream[Tick] | None = None
        self._wanted = anyio.Event()
        #: Receivers waiting in ``__anext__`` now: when the last one leaves (cancelled), no
        #: claim starts for nobody.
        self._receivers = 0
        #: When the next tick is due, on this process's monotonic clock (derived from the
        #: Redis clock's "next - now" of the last reply, never from a host clock).
        self._due = 0.0
        #: Set when the ticker closes: no claim starts after it.
        self._closing = False
        #: Set while no claim is in flight (a claim's tick lands in the buffer before).
        self._claim_done = anyio.Event()
        self._claim_done.set()

    def __repr__(self) -> str:
        return f"<pool.Ticker {self.name!r} every {self.interval}s state={self._state.value}>"

    def _closed_error(self, message: str) -> ClosedError:
        return PoolClosedError(message)

    async def _prepare(self) -> None:
        self._send, self._recv = anyio.create_memory_object_stream[Tick](1)
        self._host.check_usable("open_ticker")
        next_ms, now_ms = await self._host.io.run("tick", "open", self.name, self._interval_ms)
        self._due = anyio.current_time() + max(0, next_ms - now_ms) / 1000

    async def _start(self, tg: anyio.abc.TaskGroup) -> None:
        tg.start_soon(self._loop)

    async def _stop(self) -> None:
        """Hand back a tick claimed and not delivered (its receiver left), so that another
        receiver gets it instead of nobody."""
        self._closing = True
        with anyio.CancelScope(shield=True):
            await self._claim_done.wait()
            if self._recv is None:
                return
            try:
                tick = self._recv.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return
            due_ms = round(tick.at.timestamp() * 1000)
            try:
                with anyio.fail_after(SHIELDED_CALL_TIMEOUT):
                    kept = await self._host.io.run(
                        "tick",
                        "release",
                        self.name,
                        self._interval_ms,
                        str(due_ms),
                        str(tick.count),
                    )
            except Exception as exc:
                if not is_transient(exc) and not isinstance(exc, TimeoutError):
                    raise
                self._host.logger.warning(
                    "pool %s: ticker %r closed with an undelivered tick (due %s, count %d) "
                    "that it could not hand back: %r",
                    self._host.pool,
                    self.name,
                    tick.at.isoformat(),
                    tick.count,
                    exc,
                )
                return
            if not kept:
                self._host.logger.warning(
                    "pool %s: ticker %r: the undelivered tick due %s was not handed back: "
                    "the ticker's interval changed meanwhile",
                    self._host.pool,
                    self.name,
                    tick.at.isoformat(),
                )

    def _finish(self) -> None:
        if self._send is not None and self._recv is not None:
            self._send.close()
            self._recv.close()

    async def _loop(self) -> None:
        assert self._send is not None  # made by _prepare
        attempt = 0
        while True:
            await self._wanted.wait()
            await anyio.sleep_until(self._due)
            if self._closing:
                return
            if not self._wanted.is_set():
                continue  # the receiver left while the tick was not due yet: claim nothing
            self._claim_done = anyio.Event()
            try:
                # Shielded: cancelled after Redis ran it, the claimed tick would be lost.
                with anyio.fail_after(SHIELDED_CALL_TIMEOUT, shield=True):
                    ticks, next_ms, now_ms, due = await self._host.io.run(
                        "tick", "claim", self.name, self._interval_ms
                    )
                self._due = anyio.current_time() + max(0, next_ms - now_ms) / 1000
                if ticks > 0:
                    _metrics.pool_cell(self._host.pool).ticks += int(ticks)
                    self._wanted = anyio.Event()
                    self._send.send_nowait(Tick(self.name, ms_to_datetime(due), int(ticks)))
            except Exception as exc:
                if not is_transient(exc) and not isinstance(exc, TimeoutError):
                    raise
                delay = backoff_delay(attempt, cap=min(1.0, self.interval))
                attempt += 1
            else:
                attempt, delay = 0, 0.0
            finally:
                self._claim_done.set()
            if delay:
                await anyio.sleep(delay)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Tick:
        """Wait for the next tick this node receives."""
        self._check_open("iteration")
        assert self._recv is not None  # made by _prepare
        self._receivers += 1
        self._wanted.set()
        try:
            return await self._recv.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None
        finally:
            self._receivers -= 1
            if not self._receivers and self._wanted.is_set():
                self._wanted = anyio.Event()  # nobody waits: the loop claims no more ticks


@attrs.frozen
class JobPlan:
    """What a :class:`JobProducer` wants running after one of its ticks.

    Attributes:
        start: ``(key, payload)`` pairs to dispatch; a key that already runs counts as
            started.
        stop: Keys to stop (ignored when ``stop_all``).
        stop_all: Stop every job this producer started before that is not in ``start``.
    """

    start: Sequence[tuple[str, bytes]] = ()
    stop: Sequence[str] = ()
    stop_all: bool = False


class JobProducer(Protocol):
    """What :meth:`Node.schedule` calls: a name and a plan."""

    @property
    def name(self) -> str:
        """The producer's name (the ticker's name is derived from it)."""

    async def plan(self) -> JobPlan:
        """The jobs that should run now."""


async def run_schedule(
    host: ScheduleHost,
    open_ticker: Callable[[str, float], Ticker],
    producer: JobProducer,
    interval: float,
    logger: logging.Logger,
    *,
    task_status: anyio.abc.TaskStatus[None],
) -> None:
    """The task of :meth:`Node.schedule`: plan on each tick this node receives, apply it
    (``open_ticker``: the node's :meth:`Node.open_ticker`)."""
    record = ScheduleRecord(host.io, producer.name)
    async with open_ticker(f"schedule:{producer.name}", interval) as ticker:
        task_status.started()
        async for _ in ticker:
            try:
                plan = await producer.plan()
                await _apply(host, record, plan)
            except (PoolClosedError, PoolShuttingDownError) as exc:
                # The node is closing (its block is being left) or the pool shuts down: the
                # schedule ends with it, quietly; another node's schedule takes the next tick.
                logger.debug("pool %s: schedule %r ends: %r", host.pool, producer.name, exc)
                return
            except Exception as exc:
                # Logged, never fatal: the next tick (on whichever node) tries again.
                level = logging.WARNING if is_transient(exc) else logging.ERROR
                logger.log(level, "pool %s: producer %r failed: %r", host.pool, producer.name, exc)


async def _apply(host: ScheduleHost, record: ScheduleRecord, plan: JobPlan) -> None:
    started: list[str] = []
    wanted = set()
    for key, payload in plan.start:
        validate_key(key)
        wanted.add(key)
        # A key that already runs satisfies the plan (it is not retried every tick).
        with contextlib.suppress(JobExistsError):
            await host.dispatch_job(key, payload)
        started.append(key)
    await record.add(started)
    targets = sorted(await record.keys() - wanted) if plan.stop_all else list(plan.stop)
    stopped: list[str] = []
    for key in targets:
        with contextlib.suppress(JobNotFoundError):
            await host.stop_job(key)
        stopped.append(key)
    await record.remove(stopped)
