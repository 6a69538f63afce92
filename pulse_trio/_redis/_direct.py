"""The direct connection: one task at a time, request then reply, no task of its own.

- :func:`open_stream` opens a TCP, TLS or Unix socket stream; :meth:`DirectConnection.open`
  performs the handshake on it (``HELLO`` with the protocol version, ACL user/password and
  client name, then ``SELECT``), pipelined in one send.
- :class:`DirectConnection` is what blocking commands (``XREAD BLOCK``...), subscriptions and
  Sentinel queries use, and what a multiplexed connection starts from. A cancelled blocking
  call is freed with ``CLIENT UNBLOCK`` sent on the multiplexed connection, its reply read and
  dropped; when that is not possible the connection is discarded instead of being reused out
  of step: **a direct connection is never reused with a reply still due**.

Every failure to reach the server raises :class:`pulse_trio.RedisUnavailableError`, and a
connection lost with a request :class:`~._requests.ConnectionLostError`.
"""

from __future__ import annotations

import contextlib
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

import anyio
import anyio.abc

from .._errors import RedisUnavailableError
from ._fast_io import fast_io, poller
from ._requests import ConnectionLostError, auto_timeout, command_name
from ._resp import Arg, ProtocolError, ResponseError, RespState, encode_command
from ._settings import Address, ConnectionSettings

#: How long freeing a cancelled blocking call may take before its connection is discarded.
RECOVERY_TIMEOUT: Final = 2.0
#: The most bytes read from a socket at once.
RECEIVE_SIZE: Final = 65536

#: What a lost or broken connection raises (the drivers turn them into
#: :class:`~._requests.ConnectionLostError`).
NETWORK_ERRORS = (
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
    except NETWORK_ERRORS as exc:
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


async def close_stream(stream: anyio.abc.ByteStream) -> None:
    """Close ``stream`` at once, without a goodbye."""
    await anyio.aclose_forcefully(stream)


class DirectConnection:
    """A handshaken connection used by one task at a time: send a request, read its reply.

    Blocking commands use it (:meth:`~._node.Node.blocking`). It runs no task of its own.

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
        self._poller = poller(fast_io(stream))
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
            # A reply that comes quickly (a non-blocking read, a blocking one with entries
            # waiting) is polled for; a blocking read that waits costs a few polls, then
            # its connection rests (see Poller).
            data = None if self._poller is None else await self._poller.receive(RECEIVE_SIZE)
            if data is None:
                data = await self._stream.receive(RECEIVE_SIZE)
            self._replies.extend(reply for _, reply in self._core.receive_data(data))
        return self._replies.popleft()

    async def _roundtrip(self, requests: list[bytes]) -> list[Any]:
        """Send requests in one write and read their replies (no error translation)."""
        try:
            for request in requests:
                self._core.queue(True, request)
            await self._stream.send(self._core.data_to_send())
            return [await self._read_reply() for _ in requests]
        except NETWORK_ERRORS as exc:
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
                f"Redis at {self.address} did not answer {command_name(args)} within {timeout} s"
            ) from exc
        except NETWORK_ERRORS as exc:
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
                with contextlib.suppress(*NETWORK_ERRORS):
                    await self._read_reply()
                    return
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (at once, without a goodbye)."""
        self.closed = True
        await close_stream(self._stream)
