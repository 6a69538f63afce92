"""One server as a client sees it: :class:`Node`, with its connections and statistics.

A node holds the server's :class:`~._multiplexed.MultiplexedConnection`, opened on first use
and again after it was lost, by the caller that needs it, with a jittered exponential backoff
between failed attempts (one attempt at a time: callers that waited for it fail as it did),
and a bounded pool of :class:`~._direct.DirectConnection` objects for blocking commands. A
request lost before it was written is sent once more on a new connection; one lost after is
sent again only if the caller says it is idempotent (:func:`~._requests.safe_to_retry`).
A direct connection is lent to one caller at a time and goes back to the pool only if it is
still open (with :class:`~._direct.DirectConnection`'s recovery: **a pooled connection has no
reply still due**); one idle for ``health_check_interval`` is PINGed before it is lent again.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NoReturn

import anyio
import anyio.abc
import attrs

from .. import _metrics
from .._errors import ClosedError, RedisUnavailableError
from ._direct import DirectConnection
from ._multiplexed import MultiplexedConnection
from ._requests import ConnectionLostError, safe_to_retry
from ._resp import ResponseError, encode_command
from ._settings import MAX_BLOCKING_CONNECTIONS, Address, Backoff, ConnectionSettings


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
        # Metrics: the server's cell holds what replaced connections counted; one request in
        # LATENCY_SAMPLE_EVERY has its round trip recorded.
        self._cell = _metrics.server_cell(name)
        self._sampled = 0
        self.connects_folded = 0
        _metrics.track_transport_node(self)

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
            self._fold_counts()
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
        self._sampled += 1
        if self._sampled % _metrics.LATENCY_SAMPLE_EVERY or _metrics.client_duration is None:
            return await self._on_multiplexed(lambda mux: mux.request(payload), retry_written=retry)
        start = time.perf_counter()
        reply = await self._on_multiplexed(lambda mux: mux.request(payload), retry_written=retry)
        _metrics.client_duration.record(
            time.perf_counter() - start, {"db.system.name": "redis", "server.address": self.name}
        )
        return reply

    def _fold_counts(self) -> None:
        """Add the current multiplexed connection's counters to the server's cell (before
        the connection is replaced or the node closes)."""
        mux, cell = self._mux, self._cell
        if mux is not None:
            cell.commands += mux.requests
            cell.writes += mux.writes
            mux.requests = mux.writes = 0
        cell.connects += self.connects - self.connects_folded
        self.connects_folded = self.connects

    def live_counts(self) -> tuple[int, int, int, int, int]:
        """For the metrics: commands, writes and connects not folded into the server's cell
        yet, and the direct connections used and idle."""
        mux = self._mux
        commands, writes = (mux.requests, mux.writes) if mux is not None else (0, 0)
        return commands, writes, self.connects - self.connects_folded, self._lent, len(self._idle)

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
                if attempt == 2 or not safe_to_retry(exc, idempotent=retry_written):
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
        if not self.closed:
            self._fold_counts()
        self.closed = True
        if self._mux is not None:
            self._mux.abort(reason)
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()
