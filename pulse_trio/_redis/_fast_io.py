"""The fast path's I/O adapters: what a lone caller needs of a stream besides ``receive``.

On a plain (not TLS) TCP or Unix socket, a caller whose requests are the only ones in flight
writes them itself, synchronously, and reads its reply itself (see
:class:`~._multiplexed.MultiplexedConnection`). As no task reads an idle connection then, a
look before the next write finds out whether the server closed it meanwhile, so that the
request goes to a new connection unwritten: **a request is never written to a connection
the server already closed while it was idle** (when the close could be seen; a connection
that answered within the last millisecond is not idle, see ``_multiplexed.FRESH``). :func:`fast_io`
gives that access for the streams where it exists:

- :class:`_SocketIO`: a socket the stream reads with plain ``recv`` (AnyIO's streams on Trio,
  its Unix socket streams on asyncio): a non-blocking peek, a non-blocking ``send``, and
  :meth:`~FastIO.poll`, a short busy wait for the reply (see below).
- :class:`_TransportIO`: AnyIO's TCP stream on asyncio, where the socket belongs to an
  asyncio transport: a synchronous ``transport.write``, and the state of its protocol, which
  is kept reading while the connection is idle (no :meth:`~FastIO.poll`: the transport reads).

**Polling.** A reply from a server on the same machine comes back in a few tens of
microseconds, much less than it costs the event loop to sleep in ``epoll`` and be woken
(on a virtual machine the wake-up alone costs about as much as the round trip: a
``recv`` polled in a loop does three times as many sequential ``XADD`` per second here as a
blocking one). So a lone caller that has just written its request may poll the socket for a
bounded time before it waits the ordinary way; :class:`Poller` decides whether to, and stops
polling a connection whose replies do not come back within the budget.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
import anyio.abc
import sniffio

#: ``recv`` flags as plain ints (combining the enum members costs more than the syscall).
_PEEK = int(socket.MSG_PEEK | socket.MSG_DONTWAIT)
_DONTWAIT = int(socket.MSG_DONTWAIT)


class FastIO(Protocol):
    """What the fast path needs of a stream besides ``receive``, all synchronous."""

    def alive(self) -> bool:
        """Whether the peer has not closed or reset the idle connection (nothing is read)."""

    def send(self, data: bytes) -> int:
        """Write without blocking; return how much was taken (the rest is for ``send``).

        Raises:
            OSError: The connection is broken.
        """

    def watch(self) -> None:
        """Nobody reads now: make sure :meth:`alive` will see the peer closing."""

    def poll(self, size: int) -> bytes | None:
        """Read what has arrived, without waiting.

        Returns:
            Up to ``size`` bytes, or ``None`` if nothing has arrived, the peer closed the
            connection or polling is not possible here (the caller then waits the ordinary
            way, which sees the end of stream or the error again).
        """


class _SocketIO:
    """A socket the stream reads and writes itself with plain ``recv``/``send`` and no buffer
    of its own (AnyIO's socket streams on Trio, its Unix socket streams on asyncio): a
    non-blocking send and a peek there are invisible to the stream."""

    __slots__ = ("raw",)

    def __init__(self, raw: socket.socket) -> None:
        self.raw = raw

    def alive(self) -> bool:
        try:
            return self.raw.recv(1, _PEEK) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False

    def send(self, data: bytes) -> int:
        try:
            return self.raw.send(data)
        except BlockingIOError:
            return 0

    def watch(self) -> None:
        pass  # the kernel keeps the end of stream for the peek

    def poll(self, size: int) -> bytes | None:
        try:
            return self.raw.recv(size, _DONTWAIT) or None
        except OSError:  # BlockingIOError included: nothing yet
            return None


class _TransportIO:
    """AnyIO's TCP stream on asyncio: an asyncio transport feeding AnyIO's ``StreamProtocol``.

    The socket belongs to the transport and is never touched here. ``transport.write`` is
    synchronous and takes everything (what the socket does not take at once is buffered by the
    transport, in order, ahead of any later ``send``). AnyIO pauses reading whenever no
    ``receive`` is pending, so an idle connection would never see the peer's FIN: :meth:`watch`
    resumes reading while nobody receives (data or end of stream are then queued in the
    protocol, where the next ``receive`` finds them), and :meth:`alive` looks at the
    protocol's state. The end of stream is thus seen once the event loop has polled the
    socket after it arrived (the peek on a raw socket sees it as soon as the kernel has it).
    """

    __slots__ = ("protocol", "transport")

    def __init__(self, transport: asyncio.Transport, protocol: Any) -> None:
        self.transport = transport
        self.protocol = protocol

    def alive(self) -> bool:
        protocol = self.protocol
        return not (
            protocol.is_at_eof or protocol.exception is not None or self.transport.is_closing()
        )

    def send(self, data: bytes) -> int:
        if self.transport.is_closing():
            raise ConnectionResetError("the transport is closing")
        self.transport.write(data)
        return len(data)

    def watch(self) -> None:
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def poll(self, size: int) -> bytes | None:
        return None  # the transport reads the socket, from the event loop


class Poller:
    """Polls a lone caller's socket for its reply before it waits the ordinary way.

    When no other task is runnable, it first spins for up to :attr:`SPIN` seconds without
    yielding (a loopback reply often arrives within it, and a scheduler pass costs as much
    as the wait): a pending cancellation is still raised first, but a reply caught by the
    spin returns without a scheduling point. So that back-to-back requests never hold the
    event loop, the spin is skipped when the poller has not yielded for
    :attr:`MAX_UNYIELDED` seconds. Then each round yields to the other tasks (a checkpoint:
    cancellation and scheduling point), and reads what has arrived. The polling stops as
    soon as another task has work (the event loop is theirs then, and waiting costs
    nothing), and after :attr:`BUDGET` seconds. Polling is worth it while replies come back
    within the budget (a server on the same machine or a fast network). One that does not (a
    slow command, a distant server) costs the budget in vain: after :attr:`MISSES` such
    misses in a row the connection stops polling for :attr:`REST` seconds, then tries again.
    """

    #: The longest a caller polls: a few loopback round trips.
    BUDGET = 0.0002
    #: The longest it spins first, without yielding (part of the budget).
    SPIN = 0.00005
    #: The longest the event loop may go without this poller yielding before a spin.
    MAX_UNYIELDED = 0.001
    MISSES = 3
    REST = 1.0

    __slots__ = (
        "_busy",
        "_check_cancelled",
        "_checkpoint",
        "_io",
        "_misses",
        "_resume",
        "_yielded",
    )

    def __init__(
        self,
        io: FastIO,
        busy: Callable[[], object],
        checkpoint: Callable[[], Awaitable[None]],
        check_cancelled: Callable[[], Awaitable[None]],
    ) -> None:
        self._io = io
        self._busy = busy
        self._checkpoint = checkpoint
        self._check_cancelled = check_cancelled
        self._misses = 0
        self._resume = 0.0
        self._yielded = 0.0

    async def receive(self, size: int) -> bytes | None:
        """Up to ``size`` bytes that arrived while polling, or ``None`` (then wait for them)."""
        clock = time.perf_counter
        now = clock()
        if self._misses >= self.MISSES:
            if now < self._resume:
                return None
            self._misses = 0
        until = now + self.BUDGET
        io = self._io
        busy = self._busy
        if now - self._yielded < self.MAX_UNYIELDED and not busy():
            await self._check_cancelled()
            spin_until = now + self.SPIN
            while True:
                data = io.poll(size)
                if data is not None:
                    self._misses = 0
                    return data
                if clock() > spin_until:
                    break
        checkpoint = self._checkpoint
        while True:
            await checkpoint()
            self._yielded = clock()
            data = io.poll(size)
            if data is not None:
                self._misses = 0
                return data
            if busy():
                return None  # not a miss: the other tasks' turn
            if clock() > until:
                self._misses += 1
                if self._misses >= self.MISSES:
                    self._resume = clock() + self.REST
                return None


def poller(io: FastIO | None) -> Poller | None:
    """A :class:`Poller` for ``io`` where polling is possible and safe: on Trio, over a socket
    the stream reads with plain ``recv``; ``None`` elsewhere."""
    if not isinstance(io, _SocketIO) or sniffio.current_async_library() != "trio":
        return None
    import trio

    try:
        # Whether other tasks are runnable, read from the run queue itself: the public
        # statistics build a whole record for it, which costs as much as a poll round.
        from trio._core._run import GLOBAL_RUN_CONTEXT

        busy: Callable[[], object] = GLOBAL_RUN_CONTEXT.runner.runq.__len__
    except (ImportError, AttributeError, RuntimeError):
        statistics = trio.lowlevel.current_statistics

        def busy() -> bool:
            return statistics().tasks_runnable > 0

    return Poller(io, busy, trio.lowlevel.checkpoint, trio.lowlevel.checkpoint_if_cancelled)


def fast_io(stream: anyio.abc.ByteStream) -> FastIO | None:
    """The fast path's access to ``stream``, or ``None`` where there is none (TLS, unknown)."""
    if not isinstance(stream, anyio.abc.SocketStream):
        return None  # TLS (a wrapper with its own buffers) or another kind of stream
    library = sniffio.current_async_library()
    module = type(stream).__module__
    if library == "trio" and module == "anyio._backends._trio":
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
        return _SocketIO(raw) if raw is not None else None
    if library != "asyncio" or module != "anyio._backends._asyncio":
        return None
    if isinstance(stream, anyio.abc.UNIXSocketStream):
        # AnyIO's asyncio Unix streams do raw recv/send on their socket, no transport.
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
        return _SocketIO(raw) if raw is not None else None
    # AnyIO's asyncio TCP stream: private attributes, checked (else no fast path).
    transport = getattr(stream, "_transport", None)
    protocol = getattr(stream, "_protocol", None)
    if (
        isinstance(transport, asyncio.Transport)
        and transport.get_extra_info("sslcontext") is None
        and all(hasattr(protocol, name) for name in ("is_at_eof", "exception", "read_queue"))
    ):
        return _TransportIO(transport, protocol)
    return None
