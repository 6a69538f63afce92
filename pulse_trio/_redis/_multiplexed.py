"""The multiplexed connection: every task's ordinary commands on one connection to a server.

One writer task sends, in a single ``send``, every request queued while the previous send was in
flight (automatic pipelining); one reader task feeds what arrives to the
:class:`~._requests.RequestLedger`, which wakes the callers whose replies completed, in FIFO
order. On a plain (not TLS) TCP or Unix socket a lone caller takes a fast path
(leader/follower): when its requests are the only ones in flight it writes them itself and reads
the socket itself until its reply arrived (polling it first for a short while, see
:mod:`._fast_io`), with no task switch; meanwhile the reader task is parked (one reader at a
time), and it takes over whatever replies are still due when the caller is done or cancelled. As
no task reads an idle connection there, a look before the next write (:mod:`.fast_io`) finds out
whether the server closed it meanwhile (the request then goes to a new connection, unwritten); a
connection whose last reply arrived less than :data:`FRESH` seconds ago is not idle, and is not
looked at. At most ``max_pending`` requests are outstanding; further callers wait
(back-pressure). A cancelled caller leaves its slot in the FIFO: its reply is read and dropped,
so no other caller ever gets it. A watchdog replaces a connection that has not answered for
``command_timeout`` seconds (a frozen server, a half-open socket) and PINGs an idle one: **a
caller waits for a silent connection at most about ``command_timeout``**.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter
from typing import Any, Final

import anyio
import anyio.abc
import sniffio

from ._direct import NETWORK_ERRORS, RECEIVE_SIZE, DirectConnection, close_stream
from ._fast_io import FastIO, fast_io, poller
from ._requests import ConnectionLostError, Event, RequestLedger, Waiter
from ._resp import encode_command

#: Seconds after a reply during which the connection counts as in use, not idle: the next
#: lone request is written without the look for a close (a syscall that cost 10-20 % of a
#: sequential round trip here). A close in that instant is the same race as a close just
#: after the write, which no look can see either.
FRESH: Final = 0.001


def _event_factory() -> Callable[[], Event]:
    """The cheapest event of the running backend (one is made per request).

    ``anyio.Event`` wraps the backend's own; on the hot path the wrapper is measurable, and
    the native events behave the same under AnyIO's cancellation on their own backend.
    """
    library = sniffio.current_async_library()
    if library == "trio":
        import trio

        return trio.Event
    if library == "asyncio":
        import asyncio

        return asyncio.Event
    return anyio.Event


class MultiplexedConnection:
    """One connection shared by every task for ordinary (non-blocking) commands.

    Created by :class:`~._node.Node` from a handshaken :class:`DirectConnection`; its tasks
    run in :meth:`run`. Who mutates what: callers queue requests (:meth:`request`); the writer
    task and a caller on the fast path take bytes out of the ledger; whoever owns reading (the
    reader task, or the one caller leading on the fast path) feeds the ledger, which completes
    waiters; :meth:`run`'s ``finally`` fails the remaining ones.

    Reading has one owner at a time. On a plain socket (see :func:`~._fast_io.fast_io`), the
    reader task parks (on ``_read_wanted``) whenever no reply is due or a caller leads. A
    caller whose requests are the only ones in flight while the reader is parked and the
    writer idle leads: it writes them itself (:meth:`_send_now`) and reads the socket until
    its last reply arrived (:meth:`_lead`), delivering every reply it parses; then, if other
    replies are still due (requests queued meanwhile, replies of cancelled callers, unanswered
    PINGs), it wakes the reader task, which reads them. Any other request queued while the
    reader is parked wakes it. Elsewhere (TLS) the reader task never parks and no caller leads.

    Attributes:
        address: The server.
        client_id: The server's id for this connection.
        closed: Set once the connection is lost or closed; it never comes back.
    """

    def __init__(self, direct: DirectConnection) -> None:
        self._stream = direct.stream
        # On a plain socket (not TLS) a lone request can be written without awaiting when
        # nothing else is being sent, and the state of an idle connection can be looked at
        # without reading it: the fast path (None elsewhere).
        self._io = fast_io(direct.stream)
        self._new_event = _event_factory()
        self._poller = poller(self._io)
        self.address = direct.address
        self.client_id = direct.client_id
        self._settings = direct._settings
        self._core: RequestLedger = RequestLedger()
        self._max_pending = direct._settings.max_pending
        self._write_wanted: Event | None = None
        # Set while the reader task is parked (only with ``_io``): nobody reads the socket,
        # unless a caller leads (``_leading``).
        self._read_wanted: Event | None = None
        self._leading = False
        self._space: anyio.Event | None = None
        self._replies_received = 0
        #: ``perf_counter()`` when a reply last arrived (see :data:`FRESH`).
        self._last_reply = 0.0
        self._scope = anyio.CancelScope()
        self._reason = "closed"
        self.closed = False
        #: Requests queued and ``send`` calls made so far (requests / writes = batching).
        self.requests = 0
        self.writes = 0
        #: Requests (or pipelines) whose caller read its reply itself (the fast path).
        self.leads = 0
        #: Leading callers whose reply (or its start) arrived while they polled.
        self.polled = 0

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"<MultiplexedConnection {self.address} id={self.client_id} {state} "
            f"waiting={self._core.waiting}>"
        )

    @property
    def waiting(self) -> int:
        """Requests queued or sent whose reply has not arrived yet."""
        return self._core.waiting

    async def _wait_for_room(self) -> None:
        """Wait while ``max_pending`` requests are outstanding (back-pressure).

        Raises:
            ConnectionLostError: The connection is lost (nothing of the caller's written).
        """
        while self._core.waiting >= self._max_pending and not self.closed:
            if self._space is None:
                self._space = anyio.Event()
            await self._space.wait()
        if self.closed:
            raise ConnectionLostError(
                f"connection to Redis at {self.address} lost: {self._reason}", written=False
            )

    async def request(self, payload: bytes) -> Any:
        """Queue one encoded request and return its raw reply (errors are returned, not raised).

        Raises:
            ConnectionLostError: The connection was lost before the reply arrived.

        Cancellation:
            The request stays queued (it may already be on the wire); its reply is read and
            dropped by the reader task (a caller cancelled while leading hands reading back
            to it first: nothing was consumed from the socket by the cancelled ``receive``).
        """
        await self._wait_for_room()
        waiter = Waiter(self._new_event())
        self._core.queue(waiter, payload)
        self.requests += 1
        if self._start(1):
            await self._lead(waiter)
        if not waiter.event.is_set():
            await waiter.event.wait()
        if waiter.failure is not None:
            raise waiter.failure
        return waiter.reply

    async def request_many(self, payloads: Sequence[bytes]) -> list[Any]:
        """Queue several encoded requests at once (they leave in one write); return their raw
        replies in order (errors returned, not raised). Not atomic: other callers' requests
        may be executed between them, as with any pipeline.

        Raises:
            ConnectionLostError: The connection was lost before every reply arrived (its
                ``written`` is that of the first request: if it is False, none was written).

        Cancellation:
            As for :meth:`request`: the replies still due are read and dropped.
        """
        await self._wait_for_room()
        if not payloads:
            return []
        core = self._core
        waiters = [Waiter(self._new_event()) for _ in payloads]
        for waiter, payload in zip(waiters, payloads, strict=True):
            core.queue(waiter, payload)
        self.requests += len(waiters)
        if self._start(len(waiters)):
            await self._lead(waiters[-1])
        replies = []
        for waiter in waiters:
            if not waiter.event.is_set():
                await waiter.event.wait()
            if waiter.failure is not None:
                raise waiter.failure
            replies.append(waiter.reply)
        return replies

    def _start(self, count: int) -> bool:
        """Get requests just queued written and their replies read.

        Args:
            count: How many were queued, if they are one caller's (0 for
                :meth:`queue_unanswered`).

        Returns:
            Whether the caller is to read the replies itself (:meth:`_lead`): its requests
            are the only ones in flight, the reader task is parked and the writer idle. They
            have then been written (unless the connection was aborted).
        """
        if self._scope.cancel_called:
            return False  # aborted: run() fails every queued request
        core = self._core
        io = self._io
        parked = self._read_wanted
        if io is not None and parked is not None and not self._leading:
            # Nobody reads the socket: nobody noticed if the server closed it meanwhile, and a
            # request written to it now would count as written (not retried). Look first,
            # unless a reply came in an instant ago (a close since then is the same race as
            # one just after the write, and the look is a syscall per request).
            if perf_counter() - self._last_reply > FRESH and not io.alive():
                self.abort("the server closed the idle connection")
                return False
            if count and core.waiting == count and self._write_wanted is not None:
                # The only requests in flight: no other caller's can join them in the same
                # write, so write them now (synchronous, non-blocking; never partial but in a
                # full socket buffer, whose rest the writer then sends; an asyncio transport
                # buffers the rest itself) and read the reply here.
                self._send_now(io)
                if self._scope.cancel_called:
                    return False
                self._leading = True
                self.leads += 1
                return True
            self._read_wanted = None
            parked.set()
        wanted = self._write_wanted
        if wanted is not None:  # the writer is idle: nothing is being sent
            self._write_wanted = None
            wanted.set()
        return False

    async def _lead(self, last: Waiter) -> None:
        """Read the socket (the caller leads) until ``last``'s reply arrived, delivering every
        reply parsed; then hand reading back to the reader task if replies are still due.

        A lost connection aborts it, as in the reader task (``last`` then fails with run()'s
        ``finally``); cancellation (which consumes nothing in ``receive``) hands back too.
        """
        core = self._core
        stream = self._stream
        try:
            if self._poller is not None:
                data = await self._poller.receive(RECEIVE_SIZE)
                if data is not None:
                    self.polled += 1
                    self._deliver(data)
            while not last.event.is_set():
                data = await stream.receive(RECEIVE_SIZE)
                self._deliver(data)
        except NETWORK_ERRORS as exc:
            self.abort(repr(exc))
        finally:
            self._leading = False
            parked = self._read_wanted
            if parked is not None:
                if core.waiting:
                    self._read_wanted = None
                    parked.set()
                elif self._io is not None:
                    self._io.watch()

    def _send_now(self, io: FastIO) -> None:
        core = self._core
        data = core.data_to_send()
        try:
            sent = io.send(data)
        except OSError as exc:
            self.abort(repr(exc))
            return
        self.writes += 1
        if sent < len(data):
            core.unsend(data[sent:])
            wanted = self._write_wanted
            if wanted is not None:
                self._write_wanted = None
                wanted.set()

    def queue_unanswered(self, payload: bytes) -> None:
        """Queue a request whose reply nobody waits for (it is read and dropped)."""
        if self.closed:
            raise ConnectionLostError(f"connection to {self.address} is closed", written=False)
        self._core.queue(None, payload)
        self._start(0)

    def abort(self, reason: str) -> None:
        """Drop the connection: every waiting request fails with :class:`ConnectionLostError`.

        It counts as closed from this call on (the tasks end at their next checkpoint): a
        caller woken by the reply that made us abort, and running before those tasks do,
        gets a new connection instead of queueing its request on this one.
        """
        if not self.closed:
            self._reason = reason
            self.closed = True
        self._scope.cancel()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Run the writer, reader and watchdog until the connection is lost or aborted.

        Never raises for a lost connection: it records why, fails the waiting requests and
        returns. The stream is closed on the way out.
        """
        try:
            with self._scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._guard, self._write_loop)
                    tg.start_soon(self._guard, self._watchdog)
                    task_status.started()
                    await self._guard(self._read_loop)
        finally:
            self.closed = True
            self._core.fail_waiters(f"connection to Redis at {self.address} lost: {self._reason}")
            if self._space is not None:
                self._space.set()
            with anyio.CancelScope(shield=True):
                await close_stream(self._stream)

    async def _guard(self, loop: Callable[[], Awaitable[None]]) -> None:
        try:
            await loop()
        except NETWORK_ERRORS as exc:
            self.abort(repr(exc))

    async def _write_loop(self) -> None:
        core = self._core
        stream = self._stream
        while True:
            if not core.has_data_to_send():
                wanted = self._write_wanted = self._new_event()
                await wanted.wait()
                continue
            self.writes += 1
            await stream.send(core.data_to_send())

    async def _read_loop(self) -> None:
        core = self._core
        stream = self._stream
        io = self._io
        poller = self._poller
        while True:
            if io is not None and (self._leading or not core.waiting):
                parked = self._read_wanted = self._new_event()
                if not self._leading:
                    io.watch()
                await parked.wait()
                continue
            # Replies are due: poll for them while no other task has work (the callers
            # waiting for them have none), then wait the ordinary way.
            data = None if poller is None else await poller.receive(RECEIVE_SIZE)
            if data is None:
                data = await stream.receive(RECEIVE_SIZE)
            self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        """Hand the replies ``data`` completes to their waiters; wake a caller waiting for room."""
        self._replies_received += self._core.deliver(data)
        self._last_reply = perf_counter()
        if self._core.closing is not None:
            self.abort(f"the server closes it after {self._core.closing!r}")
        space = self._space
        if space is not None and self._core.waiting < self._max_pending:
            self._space = None
            space.set()

    async def _watchdog(self) -> None:
        """Replace the connection when it stops answering; PING it when it has been idle."""
        settings = self._settings
        tick = max(0.01, min(settings.command_timeout, settings.health_check_interval) / 4)
        seen = self._replies_received
        stalled = 0.0
        idle = 0.0
        while True:
            await anyio.sleep(tick)
            if self._replies_received != seen or not self._core.waiting:
                stalled = 0.0
                idle = idle + tick if self._replies_received == seen else 0.0
                seen = self._replies_received
            else:
                stalled += tick
                idle = 0.0
                if stalled >= settings.command_timeout:
                    self.abort(f"no reply for {settings.command_timeout} s")
                    return
            if idle >= settings.health_check_interval:
                idle = 0.0
                self.queue_unanswered(encode_command(("PING",)))
