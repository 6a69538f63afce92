"""The fast path's I/O adapters: what a lone caller needs of a stream besides ``receive``.

On a plain (not TLS) TCP or Unix socket, a caller whose requests are the only ones in flight
writes them itself, synchronously, and reads its reply itself (see
:class:`~._multiplexed.MultiplexedConnection`). As no task reads an idle connection then, a
look before the next write finds out whether the server closed it meanwhile, so that the
request goes to a new connection unwritten: **a request is never written to a connection
the server already closed while it was idle** (when the close could be seen). :func:`fast_io`
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
from typing import Any, Protocol

import anyio
import anyio.abc
import sniffio


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

    def poll(self, size: int, until: float) -> bytes | None:
        """Read what has arrived, trying until ``time.perf_counter()`` passes ``until``.

        Returns:
            Up to ``size`` bytes, or ``None`` if nothing arrived in time, the peer closed the
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
            return self.raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
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

    def poll(self, size: int, until: float) -> bytes | None:
        recv = self.raw.recv
        flags = socket.MSG_DONTWAIT
        clock = time.perf_counter
        while True:
            try:
                data = recv(size, flags)
            except BlockingIOError:
                if clock() > until:
                    return None
                continue
            except OSError:
                return None
            return data or None


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

    def poll(self, size: int, until: float) -> bytes | None:
        return None  # the transport reads the socket, from the event loop


class Poller:
    """Whether a lone caller polls for its reply (:meth:`FastIO.poll`), and for how long.

    Polling is worth it while replies come back within the budget (a server on the same
    machine or a fast network): then it saves the event loop's sleep and wake-up. A reply that
    does not (a slow command, a distant server) costs the budget in vain, with the event loop
    blocked meanwhile; after ``MISSES`` such misses in a row the connection stops polling for
    ``REST`` seconds, then tries again.
    """

    #: The longest a caller polls: about five loopback round trips.
    BUDGET = 0.0002
    MISSES = 3
    REST = 1.0

    __slots__ = ("_misses", "_resume")

    def __init__(self) -> None:
        self._misses = 0
        self._resume = 0.0

    def deadline(self) -> float | None:
        """The ``until`` for :meth:`FastIO.poll`, or ``None`` if not polling now."""
        now = time.perf_counter()
        if self._misses >= self.MISSES:
            if now < self._resume:
                return None
            self._misses = 0
        return now + self.BUDGET

    def record(self, hit: bool) -> None:
        """Count a poll that got data (``hit``) or not."""
        if hit:
            self._misses = 0
            return
        self._misses += 1
        if self._misses >= self.MISSES:
            self._resume = time.perf_counter() + self.REST


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
