"""The sans-I/O bookkeeping of requests and replies: no sockets, no tasks, no clock.

In the style of h11 (bytes in, events out; the caller does the I/O), this module decides
what the connection drivers (:mod:`._multiplexed`, :mod:`._direct`, :mod:`._node`) only
carry out. Tests drive it with plain bytes.

- :class:`RequestLedger` is the state of one shared connection: a
  :class:`~._resp.RespState` whose tokens are :class:`Waiter` objects. Requests are queued
  with their waiter and leave together in the next write (:meth:`~._resp.RespState.data_to_send`
  joins every request queued since the last one: automatic pipelining).
  :meth:`RequestLedger.deliver` parses bytes from the server and hands each reply to the
  waiter of the oldest request still waiting, as Redis answers one connection's requests in
  order. A cancelled caller's waiter keeps its place, so its reply is consumed there, never
  by the next caller: **a reply never reaches the wrong waiter**.
- When the connection is lost, :meth:`RequestLedger.fail_waiters` fails every waiter with a
  :class:`ConnectionLostError` saying whether its bytes were handed to the socket
  (``written``: the server may have run it) or not (it certainly did not run).
  :func:`safe_to_retry` turns that into the rule every retry follows: **a request that may
  have run is never sent again unless it is idempotent** (:data:`IDEMPOTENT_COMMANDS`).
- :func:`auto_timeout` is how long a direct connection waits for a command's reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .._errors import RedisUnavailableError
from ._resp import Arg, ResponseError, RespState

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


def safe_to_retry(error: RedisUnavailableError, *, idempotent: bool) -> bool:
    """Whether a request that failed with ``error`` may be sent again (once, elsewhere).

    Args:
        error: Why it failed: a :class:`ConnectionLostError` says whether the request was
            written; any other :class:`~pulse_trio.RedisUnavailableError` (the server could
            not be reached) means it was not.
        idempotent: Whether running the request twice does no harm (read-only commands).

    Returns:
        True if the request certainly did not run, or if it is idempotent.
    """
    return idempotent or not (isinstance(error, ConnectionLostError) and error.written)


#: The start of the error reply after which Redis closes the connection.
PROTOCOL_ERROR = "ERR Protocol error"


class Event(Protocol):
    """What a waiter needs of an event (``trio.Event``, ``asyncio.Event``, ``anyio.Event``)."""

    def set(self) -> Any:
        """Wake whoever waits (idempotent)."""

    def is_set(self) -> bool:
        """Whether :meth:`set` was called."""

    async def wait(self) -> Any:
        """Wait until :meth:`set` is called."""


class Waiter:
    """A caller waiting for its reply on a multiplexed connection.

    Exactly one of ``reply`` (the raw reply, an error reply included) and ``failure`` is
    meaningful once ``event`` is set.
    """

    __slots__ = ("event", "failure", "reply")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.reply: Any = None
        self.failure: ConnectionLostError | None = None


class RequestLedger(RespState[Waiter]):
    """Which reply belongs to which waiter on one connection, and what a loss means for each.

    The driver queues each request with its :class:`Waiter` (``None`` when nobody waits:
    the reply is then dropped), writes :meth:`data_to_send`, feeds what it reads to
    :meth:`deliver`, and calls :meth:`fail_waiters` once the connection is lost. Who mutates
    it: see :class:`~._multiplexed.MultiplexedConnection`.
    """

    #: Set to the server's error reply once it answered ``ERR Protocol error``: it closes
    #: the connection after that reply (a request past ``proto-max-bulk-len``), so the
    #: driver drops it at once instead of sending more requests to a closing socket.
    closing: str | None = None

    def deliver(self, data: bytes) -> int:
        """Parse bytes from the server; give each completed reply to its waiter (FIFO).

        Replies of requests queued without a waiter, and push messages, are dropped. A
        waiter whose caller was cancelled still gets its reply (nobody reads it).

        Returns:
            How many replies ``data`` completed.

        Raises:
            ProtocolError: ``data`` is not RESP, or a reply arrived that no request awaits
                (the ledger is then unusable).
        """
        completed = self.receive_data(data)
        for waiter, reply in completed:
            if type(reply) is ResponseError and reply.message.startswith(PROTOCOL_ERROR):
                self.closing = reply.message
            if waiter is not None and type(waiter) is Waiter:
                waiter.reply = reply
                waiter.event.set()
        return len(completed)

    def fail_waiters(self, message: str) -> None:
        """Fail every waiting request, as its connection is lost (the ledger is then unusable).

        Each waiter gets a :class:`ConnectionLostError` with ``message``, ``written`` True if
        its bytes were handed out by :meth:`data_to_send` (the server may have run it), False
        if not (it certainly did not), and is woken.
        """
        sent, unsent = self.fail()
        for waiter in sent:
            waiter.failure = ConnectionLostError(message, written=True)
            waiter.event.set()
        for waiter in unsent:
            waiter.failure = ConnectionLostError(message, written=False)
            waiter.event.set()


def auto_timeout(args: tuple[Arg, ...], command_timeout: float) -> float | None:
    """``command_timeout`` plus the ``BLOCK <ms>`` of ``args``; ``None`` for ``BLOCK 0``."""
    for i, arg in enumerate(args[:-1]):
        if isinstance(arg, str | bytes) and arg in ("BLOCK", b"BLOCK", "block", b"block"):
            block = int(args[i + 1])
            return None if block == 0 else command_timeout + block / 1000
    return command_timeout


def command_name(args: Sequence[Arg]) -> str:
    """The name of the command ``args`` (its first item), for messages."""
    first = args[0]
    return first.decode(errors="replace") if isinstance(first, bytes) else str(first)
