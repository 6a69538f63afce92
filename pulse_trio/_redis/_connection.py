"""The I/O drivers of the transport: sockets, handshakes, tasks (the protocol is in ``_resp``).

- :func:`open_connection` opens a TCP, TLS or Unix socket stream and performs the handshake
  (``HELLO`` with the protocol version, ACL user/password and client name, then ``SELECT``),
  pipelined in one send.
- :class:`MultiplexedConnection` carries the ordinary commands of every task of a client to
  one server. One writer task sends, in a single ``send``, every request queued while the
  previous send was in flight (automatic pipelining); one reader task feeds what arrives to
  the :class:`~._resp.RespState` and wakes the callers whose replies completed, in FIFO order.
  On a plain (not TLS) TCP or Unix socket a lone caller takes a fast path (leader/follower):
  when its requests are the only ones in flight it writes them itself and reads the socket
  itself until its reply arrived, with no task switch; meanwhile the reader task is parked
  (one reader at a time), and it takes over whatever replies are still due when the caller is
  done or cancelled. As no task reads an idle connection there, a look before the next write
  finds out whether the server closed it meanwhile (the request then goes to a new
  connection, unwritten): a non-blocking peek at the socket, or on asyncio TCP, where the
  socket belongs to an asyncio transport, the state of its protocol, which is kept reading
  while the connection is idle. At most ``max_pending`` requests are outstanding; further
  callers wait (back-pressure). A cancelled caller leaves its slot in the FIFO: its reply is
  read and dropped, so no other caller ever gets it. A watchdog replaces a connection that
  has not answered for ``command_timeout`` seconds (a frozen server, a half-open socket) and
  PINGs an idle one.
- :class:`DirectConnection` is a connection used by one task at a time, request then reply,
  with no background task: the connection for blocking commands (``XREAD BLOCK``...). A
  cancelled blocking call is freed with ``CLIENT UNBLOCK`` sent on the multiplexed
  connection, its reply read and dropped; when that is not possible the connection is
  discarded instead of being reused out of step.
- :class:`Node` is everything a client holds for one server: its multiplexed connection,
  reconnected on demand with jittered exponential backoff, and a bounded pool of direct
  connections.

Every failure to reach the server, and every request lost with its connection, raises
:class:`pulse_trio.RedisUnavailableError` (:class:`ConnectionLostError` for the latter).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final, Literal, NoReturn, Protocol

import anyio
import anyio.abc
import attrs
import sniffio

from .._errors import ClosedError, RedisUnavailableError
from ._resp import Arg, ProtocolError, ResponseError, RespState, encode_command

logger = logging.getLogger("pulse_trio.redis")

#: Default bound on opening a connection and its handshake, in seconds.
CONNECT_TIMEOUT: Final = 5.0
#: Default bound on a reply on the multiplexed connection, in seconds: a connection that
#: answers nothing for that long while requests wait is replaced (frozen or half-open).
COMMAND_TIMEOUT: Final = 10.0
#: A connection idle for that long (seconds) is PINGed to find out whether it still works.
HEALTH_CHECK_INTERVAL: Final = 5.0
#: Default bound on the requests outstanding on one multiplexed connection.
MAX_PENDING: Final = 4096
#: Default number of dedicated connections per server for blocking commands.
MAX_BLOCKING_CONNECTIONS: Final = 64
#: How long freeing a cancelled blocking call may take before its connection is discarded.
RECOVERY_TIMEOUT: Final = 2.0
#: Reconnection backoff: first delay and cap, in seconds (each delay is jittered).
BACKOFF_INITIAL: Final = 0.05
BACKOFF_MAX: Final = 2.0
_RECEIVE_SIZE = 65536

#: Commands that are safe to send twice: retried once on a new connection when their
#: connection was lost after they were written (read-only commands and PING).
IDEMPOTENT_COMMANDS = frozenset(
    {
        "PING", "ECHO", "TIME", "INFO", "DBSIZE", "GET", "MGET", "STRLEN", "EXISTS", "TYPE",
        "TTL", "PTTL", "HGET", "HMGET", "HGETALL", "HKEYS", "HVALS", "HLEN", "HEXISTS", "HSCAN",
        "SCAN", "SMEMBERS", "SISMEMBER", "SCARD", "LRANGE", "LLEN", "LINDEX", "ZRANGE", "ZSCORE",
        "ZCARD", "ZRANK", "XLEN", "XRANGE", "XREVRANGE", "XINFO", "XPENDING", "EVALSHA_RO",
        "EVAL_RO", "CLUSTER", "ROLE", "SCRIPT",
    }
)  # fmt: skip


class ConnectionLostError(RedisUnavailableError):
    """A request was lost with its connection (closed, reset, frozen, or the client closed).

    Attributes:
        written: Whether the request's bytes had been handed to the socket: if so the server
            may have executed it; if not, it certainly did not.
    """

    def __init__(self, message: str, *, written: bool) -> None:
        super().__init__(message)
        self.written = written


@attrs.frozen
class Address:
    """Where a server listens: ``host`` and ``port``, or a Unix socket ``path``."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"


@attrs.frozen
class ConnectionSettings:
    """How to open and use connections (every field has the documented default).

    Attributes:
        username: ACL user (``None``: the default user).
        password: Password (``None``: no AUTH).
        db: Database number selected on every connection.
        client_name: ``CLIENT SETNAME`` of every connection, or ``None``.
        protocol: RESP version, 2 or 3 (``HELLO``); 3 by default.
        ssl_context: TLS context; ``None`` for plain connections.
        tls_hostname: Host name checked against the server's certificate (default: the host).
        connect_timeout: Bound on connect + handshake, seconds.
        command_timeout: Bound on a reply, seconds (see :data:`COMMAND_TIMEOUT`).
        health_check_interval: Idle time after which a connection is PINGed, seconds.
        max_pending: Bound on outstanding requests per multiplexed connection.
    """

    username: str | None = None
    password: str | None = None
    db: int = 0
    client_name: str | None = None
    protocol: int = 3
    ssl_context: ssl.SSLContext | None = None
    tls_hostname: str | None = None
    connect_timeout: float = CONNECT_TIMEOUT
    command_timeout: float = COMMAND_TIMEOUT
    health_check_interval: float = HEALTH_CHECK_INTERVAL
    max_pending: int = MAX_PENDING


class Backoff:
    """Jittered exponential delays between reconnection attempts (pure, no I/O)."""

    def __init__(self, initial: float = BACKOFF_INITIAL, maximum: float = BACKOFF_MAX) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0

    def next_delay(self) -> float:
        """Count one more failure; return how long to wait before the next attempt."""
        self.failures += 1
        ceiling = min(self.maximum, self.initial * 2 ** min(self.failures - 1, 30))
        return float(ceiling * random.uniform(0.5, 1.0))

    def reset(self) -> None:
        """Forget the failures (after a success)."""
        self.failures = 0


_NETWORK_ERRORS = (
    OSError,
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    ssl.SSLError,
    ProtocolError,
)


async def open_stream(address: Address, settings: ConnectionSettings) -> anyio.abc.ByteStream:
    """Open the socket (and TLS session) to ``address``, without handshake.

    Raises:
        RedisUnavailableError: Connecting failed or took longer than ``connect_timeout``.
    """
    try:
        with anyio.fail_after(settings.connect_timeout):
            if address.path is not None:
                return await anyio.connect_unix(address.path)
            if settings.ssl_context is not None:
                return await anyio.connect_tcp(
                    address.host,
                    address.port,
                    tls=True,
                    ssl_context=settings.ssl_context,
                    tls_hostname=settings.tls_hostname or address.host,
                    tls_standard_compatible=False,
                )
            return await anyio.connect_tcp(address.host, address.port)
    except TimeoutError as exc:
        raise RedisUnavailableError(
            f"connecting to Redis at {address} timed out after {settings.connect_timeout} s"
        ) from exc
    except _NETWORK_ERRORS as exc:
        raise RedisUnavailableError(f"cannot connect to Redis at {address}: {exc}") from exc


def handshake_requests(settings: ConnectionSettings) -> list[bytes]:
    """The requests that prepare a new connection: ``HELLO`` (+ AUTH, SETNAME), ``SELECT``."""
    hello: list[Arg] = ["HELLO", settings.protocol]
    if settings.password is not None:
        hello += ["AUTH", settings.username or "default", settings.password]
    if settings.client_name:
        hello += ["SETNAME", settings.client_name]
    requests = [encode_command(hello)]
    if settings.db:
        requests.append(encode_command(("SELECT", settings.db)))
    return requests


def client_id_from_hello(reply: Any) -> int | None:
    """The connection id in a ``HELLO`` reply (a map in RESP3, a flat list in RESP2)."""
    if isinstance(reply, list):
        reply = dict(zip(reply[::2], reply[1::2], strict=False))
    if isinstance(reply, dict):
        value = reply.get(b"id")
        return value if isinstance(value, int) else None
    return None


async def _close(stream: anyio.abc.ByteStream) -> None:
    await anyio.aclose_forcefully(stream)


class DirectConnection:
    """A handshaken connection used by one task at a time: send a request, read its reply.

    Blocking commands use it (:meth:`Node.blocking`). It runs no task of its own.

    Attributes:
        address: The server.
        client_id: The server's id for this connection (``CLIENT ID``), if known.
    """

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        address: Address,
        settings: ConnectionSettings,
        *,
        unblock: Callable[[int], Awaitable[Any]] | None = None,
        on_error: Callable[[ResponseError], None] | None = None,
    ) -> None:
        self._stream = stream
        self._on_error = on_error
        self.address = address
        self._settings = settings
        self._core: RespState[bool] = RespState()
        self._replies: deque[Any] = deque()
        self._unblock = unblock
        self.client_id: int | None = None
        self.closed = False
        self.last_used = anyio.current_time()

    @classmethod
    async def open(
        cls,
        address: Address,
        settings: ConnectionSettings,
        *,
        unblock: Callable[[int], Awaitable[Any]] | None = None,
        on_error: Callable[[ResponseError], None] | None = None,
    ) -> DirectConnection:
        """Connect to ``address`` and perform the handshake.

        Raises:
            RedisUnavailableError: The server could not be reached, closed the connection
                or did not answer within ``connect_timeout``.
            ResponseError: The server refused the handshake (wrong password, bad database).
        """
        stream = await open_stream(address, settings)
        conn = cls(stream, address, settings, unblock=unblock, on_error=on_error)
        try:
            with anyio.fail_after(settings.connect_timeout):
                replies = await conn._roundtrip(handshake_requests(settings))
        except TimeoutError as exc:
            await conn.aclose()
            raise RedisUnavailableError(
                f"Redis at {address} did not complete the handshake within "
                f"{settings.connect_timeout} s"
            ) from exc
        except BaseException:
            await conn.aclose()
            raise
        for reply in replies:
            if isinstance(reply, ResponseError):
                await conn.aclose()
                raise reply
        conn.client_id = client_id_from_hello(replies[0])
        return conn

    @property
    def stream(self) -> anyio.abc.ByteStream:
        """The underlying stream (for drivers that take the connection over)."""
        return self._stream

    async def _read_reply(self) -> Any:
        while not self._replies:
            data = await self._stream.receive(_RECEIVE_SIZE)
            self._replies.extend(reply for _, reply in self._core.receive_data(data))
        return self._replies.popleft()

    async def _roundtrip(self, requests: list[bytes]) -> list[Any]:
        """Send requests in one write and read their replies (no error translation)."""
        try:
            for request in requests:
                self._core.queue(True, request)
            await self._stream.send(self._core.data_to_send())
            return [await self._read_reply() for _ in requests]
        except _NETWORK_ERRORS as exc:
            await self.aclose()
            raise ConnectionLostError(
                f"connection to Redis at {self.address} lost: {exc!r}", written=True
            ) from exc

    # The default timeout depends on the command's BLOCK argument, which a caller's
    # fail_after cannot know; past it the connection must be closed, not just abandoned.
    async def execute(
        self,
        *args: Arg,
        timeout: float | Literal["auto"] | None = "auto",  # noqa: ASYNC109
    ) -> Any:
        """Send one command and return its reply.

        Args:
            *args: The command and its arguments.
            timeout: Bound on the round trip in seconds, ``None`` for none. ``"auto"`` (the
                default): ``command_timeout``, plus the ``BLOCK`` duration of the command if it
                has one (no bound for ``BLOCK 0``). Past it the connection is closed.

        Returns:
            The raw reply (see :mod:`._resp`).

        Raises:
            ResponseError: Redis answered with an error.
            ConnectionLostError: The connection was lost (or had been closed).
            RedisUnavailableError: No reply within ``timeout``.

        Cancellation:
            The request is already on its way, so its reply must still be consumed: the
            connection sends ``CLIENT UNBLOCK`` for it through the multiplexed connection,
            then reads the reply and drops it (shielded, at most :data:`RECOVERY_TIMEOUT`
            seconds). If that fails the connection is closed, never reused out of step.
        """
        if self.closed:
            raise ConnectionLostError(f"connection to {self.address} is closed", written=False)
        if timeout == "auto":
            timeout = auto_timeout(args, self._settings.command_timeout)
        payload = encode_command(args)
        self._core.queue(True, payload)
        data = self._core.data_to_send()
        written = False
        try:
            with anyio.fail_after(timeout):
                await self._stream.send(data)
                written = True
                reply = await self._read_reply()
        except TimeoutError as exc:
            await self.aclose()
            raise RedisUnavailableError(
                f"Redis at {self.address} did not answer {_name(args)} within {timeout} s"
            ) from exc
        except _NETWORK_ERRORS as exc:
            await self.aclose()
            raise ConnectionLostError(
                f"connection to Redis at {self.address} lost: {exc!r}", written=written
            ) from exc
        except anyio.get_cancelled_exc_class():
            await self._recover(written)
            raise
        self.last_used = anyio.current_time()
        if isinstance(reply, ResponseError):
            if self._on_error is not None:
                self._on_error(reply)
            raise reply
        return reply

    async def _recover(self, written: bool) -> None:
        """Consume the reply of a cancelled request, or close the connection."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(RECOVERY_TIMEOUT):
            if written and self._unblock is not None and self.client_id is not None:
                with contextlib.suppress(RedisUnavailableError, ResponseError):
                    await self._unblock(self.client_id)
                with contextlib.suppress(*_NETWORK_ERRORS):
                    await self._read_reply()
                    return
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (at once, without a goodbye)."""
        self.closed = True
        await _close(self._stream)


def auto_timeout(args: tuple[Arg, ...], command_timeout: float) -> float | None:
    """``command_timeout`` plus the ``BLOCK <ms>`` of ``args``; ``None`` for ``BLOCK 0``."""
    for i, arg in enumerate(args[:-1]):
        if isinstance(arg, str | bytes) and arg in ("BLOCK", b"BLOCK", "block", b"block"):
            block = int(args[i + 1])
            return None if block == 0 else command_timeout + block / 1000
    return command_timeout


def _name(args: tuple[Arg, ...] | list[Arg]) -> str:
    first = args[0]
    return first.decode(errors="replace") if isinstance(first, bytes) else str(first)


class _Event(Protocol):
    def set(self) -> Any: ...
    def is_set(self) -> bool: ...
    async def wait(self) -> Any: ...


def _event_factory() -> Callable[[], _Event]:
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


class _Waiter:
    """A caller waiting for its reply on a multiplexed connection."""

    __slots__ = ("event", "failure", "reply")

    def __init__(self, event: _Event) -> None:
        self.event = event
        self.reply: Any = None
        self.failure: ConnectionLostError | None = None


class MultiplexedConnection:
    """One connection shared by every task for ordinary (non-blocking) commands.

    Created by :class:`Node` from a handshaken :class:`DirectConnection`; its tasks run in
    :meth:`run`. Who mutates what: callers queue requests (:meth:`request`); the writer task
    and a caller on the fast path take bytes out of the core; whoever owns reading (the reader
    task, or the one caller leading on the fast path) feeds the core and completes waiters;
    :meth:`run`'s ``finally`` fails the remaining ones.

    Reading has one owner at a time. On a plain socket (see :func:`_fast_io`), the reader
    task parks (on ``_read_wanted``) whenever no reply is due or a caller leads. A caller
    whose requests are the only ones in flight while the reader is parked and the writer idle
    leads: it writes them itself (:meth:`_send_now`) and reads the socket until its last reply
    arrived (:meth:`_lead`), delivering every reply it parses; then, if other replies are
    still due (requests queued meanwhile, replies of cancelled callers, unanswered PINGs), it
    wakes the reader task, which reads them. Any other request queued while the reader is
    parked wakes it. Elsewhere (TLS) the reader task never parks and no caller leads.

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
        self._io = _fast_io(direct.stream)
        self._new_event = _event_factory()
        self.address = direct.address
        self.client_id = direct.client_id
        self._settings = direct._settings
        self._core: RespState[_Waiter] = RespState()
        self._max_pending = direct._settings.max_pending
        self._write_wanted: _Event | None = None
        # Set while the reader task is parked (only with ``_io``): nobody reads the socket,
        # unless a caller leads (``_leading``).
        self._read_wanted: _Event | None = None
        self._leading = False
        self._space: anyio.Event | None = None
        self._replies_received = 0
        self._last_activity = anyio.current_time()
        self._scope = anyio.CancelScope()
        self._reason = "closed"
        self.closed = False
        #: Requests queued and ``send`` calls made so far (requests / writes = batching).
        self.requests = 0
        self.writes = 0
        #: Requests (or pipelines) whose caller read its reply itself (the fast path).
        self.leads = 0

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
        waiter = _Waiter(self._new_event())
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
        waiters = [_Waiter(self._new_event()) for _ in payloads]
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
            # request written to it now would count as written (not retried). Look first.
            if not io.alive():
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

    async def _lead(self, last: _Waiter) -> None:
        """Read the socket (the caller leads) until ``last``'s reply arrived, delivering every
        reply parsed; then hand reading back to the reader task if replies are still due.

        A lost connection aborts it, as in the reader task (``last`` then fails with run()'s
        ``finally``); cancellation (which consumes nothing in ``receive``) hands back too.
        """
        core = self._core
        stream = self._stream
        try:
            while not last.event.is_set():
                data = await stream.receive(_RECEIVE_SIZE)
                self._deliver(core.receive_data(data))
        except _NETWORK_ERRORS as exc:
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

    def _send_now(self, io: _FastIO) -> None:
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
        """Drop the connection: every waiting request fails with :class:`ConnectionLostError`."""
        if not self.closed:
            self._reason = reason
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
            sent, unsent = self._core.fail()
            message = f"connection to Redis at {self.address} lost: {self._reason}"
            for waiter in sent:
                waiter.failure = ConnectionLostError(message, written=True)
                waiter.event.set()
            for waiter in unsent:
                waiter.failure = ConnectionLostError(message, written=False)
                waiter.event.set()
            if self._space is not None:
                self._space.set()
            with anyio.CancelScope(shield=True):
                await _close(self._stream)

    async def _guard(self, loop: Callable[[], Awaitable[None]]) -> None:
        try:
            await loop()
        except _NETWORK_ERRORS as exc:
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
        while True:
            if io is not None and (self._leading or not core.waiting):
                parked = self._read_wanted = self._new_event()
                if not self._leading:
                    io.watch()
                await parked.wait()
                continue
            data = await stream.receive(_RECEIVE_SIZE)
            self._deliver(core.receive_data(data))

    def _deliver(self, completed: list[tuple[_Waiter | None, Any]]) -> None:
        """Hand parsed replies to their waiters (dropped for cancelled callers and ``None``)."""
        for waiter, reply in completed:
            if waiter is not None and type(waiter) is _Waiter:
                waiter.reply = reply
                waiter.event.set()
        self._replies_received += len(completed)
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


class _FastIO(Protocol):
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


def _fast_io(stream: anyio.abc.ByteStream) -> _FastIO | None:
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


@attrs.frozen
class NodeStatistics:
    """A snapshot of one server's connections (from :meth:`Node.statistics`).

    Attributes:
        name: The server (address, or Sentinel service name).
        connected: Whether a multiplexed connection is open now.
        connects: Multiplexed connections opened so far (1 + reconnections).
        requests: Requests queued on the current multiplexed connection.
        writes: ``send`` calls that carried them (``requests / writes``: the batching).
        waiting: Requests on it whose reply has not arrived yet.
        blocking_in_use: Direct connections lent by ``blocking()`` now.
        blocking_idle: Direct connections kept idle in the pool.
    """

    name: str
    connected: bool
    connects: int
    requests: int
    writes: int
    waiting: int
    blocking_in_use: int
    blocking_idle: int


class Node:
    """One server as a client sees it: a multiplexed connection and a pool of direct ones.

    The multiplexed connection is opened on first use and again after it was lost, by the
    caller that needs it, with a jittered exponential backoff between failed attempts; its
    tasks run in ``task_group`` (the client's).

    Args:
        task_group: Where connection tasks run (owned by the client).
        resolve: Returns the server's current address (fixed, or asked of Sentinel).
        settings: Connection settings.
        max_blocking: Bound on the direct connections (in use plus idle).
        name: For ``repr``.
        address: The fixed address, when there is one (cluster nodes).
        on_error: Called with every error reply on a direct connection (the cluster uses it
            to learn from ``MOVED``).
    """

    def __init__(
        self,
        task_group: anyio.abc.TaskGroup,
        resolve: Callable[[], Awaitable[Address]],
        settings: ConnectionSettings,
        *,
        max_blocking: int = MAX_BLOCKING_CONNECTIONS,
        name: str = "",
        address: Address | None = None,
        on_error: Callable[[ResponseError], None] | None = None,
    ) -> None:
        self._tg = task_group
        self.address = address
        self._on_error = on_error
        self._resolve = resolve
        self.settings = settings
        self.name = name
        self._mux: MultiplexedConnection | None = None
        self._lock = anyio.Lock()
        self._backoff = Backoff()
        self._next_attempt = -math.inf
        self._attempts = 0
        self._last_failure: Exception | None = None
        self._blocking_slots = anyio.Semaphore(max_blocking)
        self._idle: list[DirectConnection] = []
        self._lent = 0
        self.retired = False
        self.connects = 0
        self.closed = False

    def __repr__(self) -> str:
        return f"<Node {self.name} mux={self._mux!r} idle_blocking={len(self._idle)}>"

    def _raise_closed(self) -> NoReturn:
        if self.retired:
            raise RedisUnavailableError(
                f"{self.name} no longer serves any hash slot (the cluster changed)"
            )
        raise ClosedError("the Redis client is closed: its `async with` block has exited")

    async def open_direct(self) -> DirectConnection:
        """Open a new handshaken direct connection to the server (not pooled).

        Raises:
            ClosedError: The client was closed.
        """
        if self.closed:
            self._raise_closed()
        address = await self._resolve()
        return await DirectConnection.open(
            address, self.settings, unblock=self._unblock, on_error=self._on_error
        )

    async def _unblock(self, client_id: int) -> Any:
        return await self.request(encode_command(("CLIENT", "UNBLOCK", client_id)))

    async def multiplexed(self) -> MultiplexedConnection:
        """The multiplexed connection, opened now if there is none (or it was lost).

        Raises:
            RedisUnavailableError: Connecting failed (the next attempt waits a backoff).
            ResponseError: The server refused the handshake.
            ClosedError: The client was closed.
        """
        mux = self._mux
        if mux is not None and not mux.closed:
            return mux
        if self.closed:
            self._raise_closed()
        attempts_seen = self._attempts
        async with self._lock:
            mux = self._mux
            if mux is not None and not mux.closed:
                return mux
            if self._attempts != attempts_seen and self._last_failure is not None:
                # An attempt made while this caller waited for the lock failed: fail as it
                # did instead of queueing one more attempt (and backoff) per waiting caller.
                last = self._last_failure
                if isinstance(last, ResponseError):
                    raise ResponseError(last.message) from last
                raise RedisUnavailableError(str(last)) from last
            await anyio.sleep_until(self._next_attempt)
            self._attempts += 1
            try:
                direct = await self.open_direct()
            except (RedisUnavailableError, ResponseError) as exc:
                self._last_failure = exc
                self._next_attempt = anyio.current_time() + self._backoff.next_delay()
                raise
            self._last_failure = None
            mux = MultiplexedConnection(direct)
            try:
                await self._tg.start(mux.run)
            except BaseException:
                await direct.aclose()
                raise
            self._backoff.reset()
            self._mux = mux
            self.connects += 1
            return mux

    async def request(self, payload: bytes, *, retry: bool = False) -> Any:
        """Send one encoded request on the multiplexed connection; return its raw reply.

        Args:
            payload: From :func:`~._resp.encode_command`.
            retry: Retry once on a new connection if the request was lost after it was written
                (for idempotent commands). A request lost before it was written is always
                retried once.

        Raises:
            RedisUnavailableError: The server could not be reached, or the request was lost.
        """
        return await self._on_multiplexed(lambda mux: mux.request(payload), retry_written=retry)

    async def request_many(self, payloads: Sequence[bytes]) -> list[Any]:
        """Send encoded requests in one write on the multiplexed connection; raw replies.

        Retried once on a new connection only if none of them had been written.

        Raises:
            RedisUnavailableError: The server could not be reached, or the requests were lost.
        """
        replies: list[Any] = await self._on_multiplexed(
            lambda mux: mux.request_many(payloads), retry_written=False
        )
        return replies

    async def _on_multiplexed(
        self, send: Callable[[Any], Awaitable[Any]], *, retry_written: bool
    ) -> Any:
        """Run ``send`` on the multiplexed connection; once more on a new one if it was lost
        before anything was written (or at all, with ``retry_written``)."""
        for attempt in (1, 2):
            mux = self._mux
            if mux is None or mux.closed:
                mux = await self.multiplexed()
            try:
                return await send(mux)
            except ConnectionLostError as exc:
                if attempt == 2 or (exc.written and not retry_written):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.asynccontextmanager
    async def blocking(self) -> AsyncIterator[DirectConnection]:
        """Borrow a direct connection for blocking commands; it goes back to the pool after.

        At most ``max_blocking`` are in use at once; further callers wait. A connection idle
        longer than ``health_check_interval`` is PINGed before it is lent; a closed one is
        never returned to the pool.
        """
        async with self._blocking_slots:
            conn: DirectConnection | None = None
            while self._idle:
                candidate = self._idle.pop()
                idle_for = anyio.current_time() - candidate.last_used
                if idle_for > self.settings.health_check_interval:
                    try:
                        await candidate.execute("PING", timeout=self.settings.command_timeout)
                    except (RedisUnavailableError, ResponseError):
                        await candidate.aclose()
                        continue
                conn = candidate
                break
            if conn is None:
                conn = await self.open_direct()
            self._lent += 1
            try:
                yield conn
            finally:
                self._lent -= 1
                if conn.closed or self.closed:
                    await conn.aclose()
                else:
                    self._idle.append(conn)

    def statistics(self) -> NodeStatistics:
        """A snapshot of this node's connections."""
        mux = self._mux
        live = mux is not None and not mux.closed
        return NodeStatistics(
            name=self.name,
            connected=live,
            connects=self.connects,
            requests=mux.requests if mux is not None and live else 0,
            writes=mux.writes if mux is not None and live else 0,
            waiting=mux.waiting if mux is not None and live else 0,
            blocking_in_use=self._lent,
            blocking_idle=len(self._idle),
        )

    def address_in_use(self) -> Address | None:
        """The address of the current multiplexed connection, if there is one."""
        mux = self._mux
        return mux.address if mux is not None and not mux.closed else None

    def reset(self, reason: str) -> None:
        """Drop the multiplexed connection and the idle pooled ones (the server moved).

        Requests in flight on the multiplexed connection fail with
        :class:`ConnectionLostError`; the next request connects again (and resolves again).
        """
        if self._mux is not None:
            self._mux.abort(reason)
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.closed = True
            self._tg.start_soon(conn.aclose)

    async def retire(self) -> None:
        """Close every connection: the server left the cluster's slot map. Requests still
        holding this node fail with :class:`RedisUnavailableError` (which the cluster
        retries on the slot's new owner when safe)."""
        self.retired = True
        await self._close("the node no longer serves any hash slot")

    async def aclose(self) -> None:
        """Close every connection of this node; in-flight requests fail."""
        await self._close("the client is closed")

    async def _close(self, reason: str) -> None:
        self.closed = True
        if self._mux is not None:
            self._mux.abort(reason)
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()
