"""The transport's public face: :func:`open_client` and :class:`Client`.

Usage::

    async with open_client("redis://localhost:6379/0", client_name="me") as client:
        await client.execute("SET", "k", b"v")              # -> raw reply (b"OK")
        await client.execute_script(Script.of(source), keys=["k"], args=[1])
        async with client.blocking() as conn:                # a dedicated connection
            await conn.execute("XREAD", "BLOCK", 5000, "STREAMS", "s", "$")
        async with client.subscribe("channel") as sub:       # a subscriber connection
            async for item in sub:                           # Message | Resubscribed
                ...

Public API (re-exported by :mod:`pulse_trio._redis`):

- ``open_client(url, *, client_name=None, connect_timeout=5.0, command_timeout=10.0,
  health_check_interval=5.0, max_blocking_connections=64, max_pending=4096,
  ssl_context=None, protocol=3) -> AsyncContextManager[Client]``
- ``Client.execute(*args, key=None) -> Any``: one command on the multiplexed connection.
- ``Client.execute_many(commands, *, raise_on_error=True) -> list[Any]``: a pipeline.
- ``Client.execute_on_primaries(*args) -> list[Any]``: e.g. ``FLUSHALL`` on every master.
- ``Client.statistics() -> list[NodeStatistics]``: connections, requests, writes, pool use.
- ``Client.execute_script(script, keys=(), args=()) -> Any``: EVALSHA, EVAL on NOSCRIPT.
- ``Client.blocking(*, key=None) -> AsyncContextManager[DirectConnection]``;
  ``DirectConnection.execute(*args, timeout="auto") -> Any``.
- ``Client.subscribe(*channels, patterns=()) -> Subscription``; ``async for item in sub``;
  ``sub.ping()``, ``sub.subscribe(...)``, ``sub.unsubscribe(...)``.
- ``Script.of(source)``; ``ResponseError`` (``.message``, ``.code``); ``Message``,
  ``Resubscribed``; :class:`pulse_trio.RedisUnavailableError` (``ConnectionLostError``).

Replies are raw (see :mod:`._resp`): with the default ``protocol=3``, maps are ``dict``,
doubles ``float``, booleans ``bool``.

Connections held, per server (per primary on a cluster): one multiplexed connection for every
``execute``/``execute_many``/``execute_script`` of every task; up to
``max_blocking_connections`` pooled ones lent by ``blocking()`` (opened on demand, kept idle
for reuse); one per open subscription (on a cluster, on one primary). A Sentinel client also
keeps one subscription to a sentinel (``+switch-master``). Commands that would block or change
the shared connection (:data:`DEDICATED_COMMANDS`, ``XREAD``/``XREADGROUP`` with ``BLOCK``)
are refused by ``execute`` with a ``ValueError``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import anyio
import anyio.abc
import attrs

from ._cluster import Cluster
from ._direct import DirectConnection
from ._node import Node, NodeStatistics
from ._pubsub import SUBSCRIPTION_BUFFER, Subscription
from ._requests import IDEMPOTENT_COMMANDS
from ._resp import Arg, ResponseError, encode_command
from ._sentinel import sentinel_resolver, watch_failovers
from ._settings import (
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    HEALTH_CHECK_INTERVAL,
    MAX_BLOCKING_CONNECTIONS,
    MAX_PENDING,
    Address,
    ConnectionSettings,
    check_client_name,
    check_count,
    check_seconds,
)
from ._url import ParsedURL, parse_url

_IDEMPOTENT = frozenset(
    {*IDEMPOTENT_COMMANDS}
    | {c.lower() for c in IDEMPOTENT_COMMANDS}
    | {c.encode() for c in IDEMPOTENT_COMMANDS}
    | {c.lower().encode() for c in IDEMPOTENT_COMMANDS}
)


#: Commands that block their connection or change its state: every task shares the
#: multiplexed connection, so they go on a dedicated one (``blocking()``, ``subscribe()``).
DEDICATED_COMMANDS = frozenset(
    {
        "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE",
        "MONITOR", "MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH", "SELECT", "SWAPDB", "AUTH",
        "HELLO", "RESET", "QUIT", "BLPOP", "BRPOP", "BLMOVE", "BRPOPLPUSH", "BLMPOP",
        "BZPOPMIN", "BZPOPMAX", "BZMPOP",
    }
)  # fmt: skip
_DEDICATED = frozenset(
    {*DEDICATED_COMMANDS}
    | {c.lower() for c in DEDICATED_COMMANDS}
    | {c.encode() for c in DEDICATED_COMMANDS}
    | {c.lower().encode() for c in DEDICATED_COMMANDS}
)
_STREAM_READS = frozenset({"XREAD", "XREADGROUP", "xread", "xreadgroup", b"XREAD", b"XREADGROUP",
                           b"xread", b"xreadgroup"})  # fmt: skip
_BLOCK = frozenset({"BLOCK", "block", b"BLOCK", b"block"})


def _check_shareable(args: Sequence[Arg]) -> None:
    name = args[0]
    if name in _DEDICATED or (name in _STREAM_READS and any(a in _BLOCK for a in args)):
        shown = name.decode() if isinstance(name, bytes) else str(name)
        raise ValueError(
            f"{shown} would block or change the connection every task shares: run it on a "
            "dedicated connection (async with client.blocking() as conn: await "
            "conn.execute(...)), or use client.subscribe() for pub/sub"
        )


def is_idempotent(args: Sequence[Arg]) -> bool:
    """Whether the command ``args`` may be sent again after its connection was lost."""
    return args[0] in _IDEMPOTENT


@attrs.frozen
class Script:
    """A Lua script, run by SHA1 (``EVALSHA``) with ``EVAL`` when the server lacks it.

    Build it once with :meth:`of` and run it with :meth:`Client.execute_script`.

    Attributes:
        source: The Lua source.
        sha: Its SHA1 as lowercase hex (ASCII bytes), what ``EVALSHA`` takes.
    """

    source: bytes
    sha: bytes

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def of(source: str | bytes) -> Script:
        """The script for ``source`` (cached: the same object for the same source, for the
        last 1024 sources)."""
        raw = source.encode() if isinstance(source, str) else source
        return Script(raw, hashlib.sha1(raw, usedforsecurity=False).hexdigest().encode())


class Topology(Protocol):
    """How a client reaches its servers (one server, Sentinel, or a cluster)."""

    async def request(self, args: Sequence[Arg], payload: bytes, key: Arg | None) -> Any:
        """Send a command to the right server; return its raw reply (errors not raised)."""

    async def request_many(
        self, commands: Sequence[Sequence[Arg]], payloads: list[bytes]
    ) -> list[Any]:
        """Send several commands (pipelined); raw replies in order (errors not raised)."""

    def node_for(self, key: Arg | None) -> Node:
        """The node that serves ``key`` (any node for ``None``)."""

    def blocking(self, key: Arg | None) -> contextlib.AbstractAsyncContextManager[DirectConnection]:
        """A pooled direct connection to the node that serves ``key``."""

    def primaries(self) -> list[Node]:
        """Every primary (the one server, or each cluster master)."""

    async def start(self) -> None:
        """Connect (raising what connecting raises)."""

    async def open_subscriber(self) -> DirectConnection:
        """A new direct connection for a subscription."""

    async def aclose(self) -> None:
        """Close every connection."""


class Standalone:
    """One server (directly, or found by Sentinel through ``node``'s resolver)."""

    def __init__(self, node: Node, *, follow_failover: bool = False) -> None:
        self.node = node
        self._follow_failover = follow_failover

    async def request(self, args: Sequence[Arg], payload: bytes, key: Arg | None) -> Any:
        """Send on the node's multiplexed connection (idempotent commands retried once)."""
        reply = await self.node.request(payload, retry=args[0] in _IDEMPOTENT)
        if (
            self._follow_failover
            and type(reply) is ResponseError
            and reply.code == "READONLY"
            and self.node._mux is not None
        ):
            # The server was demoted (a Sentinel failover): reconnect, which asks again.
            self.node._mux.abort("the server became a replica")
        return reply

    async def request_many(
        self, commands: Sequence[Sequence[Arg]], payloads: list[bytes]
    ) -> list[Any]:
        """Send in one write on the node's multiplexed connection."""
        replies = await self.node.request_many(payloads)
        if self._follow_failover and self.node._mux is not None:
            for reply in replies:
                if type(reply) is ResponseError and reply.code == "READONLY":
                    self.node._mux.abort("the server became a replica")
                    break
        return replies

    def node_for(self, key: Arg | None) -> Node:
        """The only node."""
        return self.node

    def blocking(self, key: Arg | None) -> contextlib.AbstractAsyncContextManager[DirectConnection]:
        """A pooled direct connection to the server."""
        return self.node.blocking()

    def primaries(self) -> list[Node]:
        """The one node."""
        return [self.node]

    async def start(self) -> None:
        """Open the multiplexed connection."""
        await self.node.multiplexed()

    async def open_subscriber(self) -> DirectConnection:
        """A new direct connection to the server."""
        return await self.node.open_direct()

    async def aclose(self) -> None:
        """Close the node's connections."""
        await self.node.aclose()


class Client:
    """A connection to Redis (one server, Sentinel-managed, or a Cluster) for many tasks.

    Use :func:`open_client` to get one. Ordinary commands from every task share one
    multiplexed connection per server and are pipelined automatically; blocking commands and
    subscriptions get dedicated connections.
    """

    def __init__(self, topology: Topology, settings: ConnectionSettings, url: str) -> None:
        self._topology = topology
        self.settings = settings
        self.url = url

    def __repr__(self) -> str:
        return f"<Client {self.url!r} {type(self._topology).__name__}>"

    @property
    def is_cluster(self) -> bool:
        """Whether the client talks to a Redis Cluster (keys may live on different nodes)."""
        return not isinstance(self._topology, Standalone)

    async def execute(self, *args: Arg, key: Arg | None = None) -> Any:
        """Run one command and return its raw reply.

        Args:
            *args: The command and its arguments (bytes, str, int or float).
            key: For a cluster: the key whose slot routes the command, when it is not the
                command's usual first key (ignored on a single server).

        Returns:
            The reply as hiredis builds it: ``bytes``, ``int``, ``float``, ``bool``, ``None``,
            ``list``, ``dict`` (RESP3 maps); error replies nested in arrays stay
            :class:`ResponseError` instances.

        Raises:
            ResponseError: Redis answered with an error.
            RedisUnavailableError: Redis could not be reached, or the connection was lost
                with the request (``ConnectionLostError``; idempotent commands and requests
                not yet written are retried once on a new connection first).
            ValueError: The command blocks or changes its connection (``XREAD ... BLOCK``,
                ``BLPOP``, ``SUBSCRIBE``, ``MULTI``, ``SELECT``...: see
                :data:`DEDICATED_COMMANDS`); use :meth:`blocking` or :meth:`subscribe`.
            UnencodableTextError: A ``str`` argument holds a surrogate that stands for no
                bytes (``"\\ud800"``; ``str`` is sent as UTF-8 with ``surrogateescape``). A
                ``ValueError``, raised in the caller's task before anything is queued, so
                the other callers sharing the connection's next write are unaffected.
            TypeError: An argument is not bytes, str, int or float.

        Cancellation:
            The caller stops waiting at once; the request may still run on the server (it
            may already be on the wire), and its reply is read and dropped.
        """
        if args and (args[0] in _DEDICATED or args[0] in _STREAM_READS):
            _check_shareable(args)
        reply = await self._topology.request(args, encode_command(args), key)
        if type(reply) is ResponseError:
            raise reply
        return reply

    async def execute_many(
        self, commands: Sequence[Sequence[Arg]], *, raise_on_error: bool = True
    ) -> list[Any]:
        """Run several commands in one round trip (a pipeline, not a transaction).

        They leave in one write per server and their replies come back in order. Other
        tasks' commands may run between them; use a Lua script for atomicity.

        Args:
            commands: Each a sequence like the arguments of :meth:`execute`; on a cluster
                each is routed by its own first key (commands for several nodes go out in
                parallel).
            raise_on_error: Raise the first error reply (after every reply arrived) instead
                of returning :class:`ResponseError` instances in the list.

        Returns:
            One raw reply per command, in order.

        Raises:
            ResponseError: With ``raise_on_error``, the first error reply.
            RedisUnavailableError: As for :meth:`execute` (retried only if nothing was
                written).
            UnencodableTextError, TypeError: As for :meth:`execute`; then no command of
                ``commands`` is sent.
        """
        if not commands:
            return []
        for command in commands:
            _check_shareable(command)
        payloads = [encode_command(c) for c in commands]
        replies = await self._topology.request_many(commands, payloads)
        if raise_on_error:
            for reply in replies:
                if type(reply) is ResponseError:
                    raise reply
        return replies

    def statistics(self) -> list[NodeStatistics]:
        """A snapshot of the connections to every primary (one entry per server)."""
        return [node.statistics() for node in self._topology.primaries()]

    async def execute_on_primaries(self, *args: Arg) -> list[Any]:
        """Run one command on every primary (one server; each master of a cluster), e.g.
        ``FLUSHALL`` or ``SCRIPT FLUSH``; return their replies (in no particular order).

        Raises:
            ResponseError: A primary answered with an error (the first one found).
            RedisUnavailableError: A primary could not be reached.
        """
        _check_shareable(args)
        payload = encode_command(args)
        retry = args[0] in _IDEMPOTENT
        nodes = self._topology.primaries()
        replies: list[Any] = [None] * len(nodes)
        failures: list[Exception] = []

        async def one(index: int, node: Node) -> None:
            try:
                replies[index] = await node.request(payload, retry=retry)
            except Exception as exc:  # raised below, not in an exception group
                failures.append(exc)

        async with anyio.create_task_group() as tg:
            for index, node in enumerate(nodes):
                tg.start_soon(one, index, node)
        if failures:
            raise failures[0]
        for reply in replies:
            if type(reply) is ResponseError:
                raise reply
        return replies

    async def scan_keys(
        self, match: Arg = "*", *, type: str | None = None, count: int = 1000
    ) -> list[bytes]:
        """Every key matching ``match``, found with ``SCAN`` (never ``KEYS``) on every primary.

        Args:
            match: A ``SCAN MATCH`` glob pattern.
            type: Only keys of this Redis type (``"stream"``, ``"hash"``...), or every key.
            count: The ``COUNT`` hint of each ``SCAN`` call (keys examined per round trip).

        Returns:
            The keys found, sorted, without duplicates. Keys written or deleted during the
            scan may or may not be listed (``SCAN``'s guarantee).

        Raises:
            ResponseError: A primary answered with an error (e.g. ``SCAN`` is denied).
            RedisUnavailableError: A primary could not be reached.
        """
        found: set[bytes] = set()
        for node in self._topology.primaries():
            cursor: Arg = "0"
            while True:
                args: list[Arg] = ["SCAN", cursor, "MATCH", match, "COUNT", count]
                if type is not None:
                    args += ["TYPE", type]
                reply = await node.request(encode_command(args), retry=True)
                if isinstance(reply, ResponseError):
                    raise reply
                cursor, batch = reply
                found.update(batch)
                if cursor in (b"0", "0", 0):
                    break
        return sorted(found)

    async def execute_script(
        self, script: Script | str | bytes, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()
    ) -> Any:
        """Run a Lua script by SHA1; on ``NOSCRIPT`` send its source with ``EVAL``.

        Args:
            script: A :class:`Script`, or a source (turned into one, cached).
            keys: Its KEYS (on a cluster, all in one slot; the first routes the call).
            args: Its ARGV.

        Raises:
            ResponseError: The script failed, or Redis refused it.
            RedisUnavailableError: As for :meth:`execute`.
        """
        if not isinstance(script, Script):
            script = Script.of(script)
        key = keys[0] if keys else None
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args, key=key)
        except ResponseError as exc:
            if exc.code != "NOSCRIPT":
                raise
        # EVAL runs the source and adds it to the server's script cache.
        return await self.execute("EVAL", script.source, len(keys), *keys, *args, key=key)

    def blocking(
        self, *, key: Arg | None = None
    ) -> contextlib.AbstractAsyncContextManager[DirectConnection]:
        """Borrow a dedicated connection for blocking commands (``XREAD BLOCK``...).

        Args:
            key: For a cluster, a key of the server to reach (a ``MOVED`` answer on the
                connection updates the slot map; the caller's next call goes to the new
                owner).

        Returns:
            An async context manager yielding a :class:`DirectConnection`; use its
            ``execute(*args, timeout="auto")``. At most ``max_blocking_connections`` per
            server are lent at once; further callers wait. The connection goes back to the
            pool afterwards: leave it as you found it (a ``MULTI`` ended by ``EXEC`` or
            ``DISCARD``, no ``WATCH`` left, the database of the URL). Transactions
            (``MULTI``/``EXEC``) belong here, never on the shared connection.
        """
        return self._topology.blocking(key)

    def subscribe(
        self,
        *channels: Arg,
        patterns: Sequence[Arg] = (),
        buffer_size: int = SUBSCRIPTION_BUFFER,
    ) -> Subscription:
        """A subscription to ``channels`` (and ``patterns``) on a dedicated connection.

        Use it as ``async with client.subscribe("c") as sub: async for item in sub``. Items
        are ``Message(channel, data, pattern)`` and, after each reconnection, a
        ``Resubscribed(reconnects)``: messages published while disconnected are lost.

        Args:
            *channels: Channels to subscribe to.
            patterns: Patterns to subscribe to (``PSUBSCRIBE``).
            buffer_size: Messages buffered for the consumer (default 1000); when full, the
                connection is not read until the consumer catches up (and the silence is
                not taken for a dead connection).
        """
        return Subscription(
            self._topology.open_subscriber,
            self.settings,
            tuple(channels),
            tuple(patterns),
            buffer_size,
        )


def _fixed(address: Address) -> Callable[[], Awaitable[Address]]:
    async def resolve() -> Address:
        return address

    return resolve


@contextlib.asynccontextmanager
async def open_client(
    url: str,
    *,
    client_name: str | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    command_timeout: float = COMMAND_TIMEOUT,
    health_check_interval: float = HEALTH_CHECK_INTERVAL,
    max_blocking_connections: int = MAX_BLOCKING_CONNECTIONS,
    max_pending: int = MAX_PENDING,
    ssl_context: ssl.SSLContext | None = None,
    protocol: int = 3,
) -> AsyncIterator[Client]:
    """Connect to Redis and yield a ready :class:`Client`; close everything on exit.

    Args:
        url: See :func:`parse_url` for the forms (TLS with ``rediss``).
        client_name: ``CLIENT SETNAME`` of every connection (default: the URL's
            ``?client_name=``, else none).
        connect_timeout: Bound on connect + handshake, seconds (default 5).
        command_timeout: A multiplexed connection that answers nothing for this long while
            requests wait is replaced and its requests fail (default 10 s).
        health_check_interval: Idle connections are PINGed this often, seconds (default 5).
        max_blocking_connections: Dedicated connections per server for blocking commands
            (default 64); subscriptions have their own connection each, outside this bound.
        max_pending: Outstanding requests per multiplexed connection before callers wait.
        ssl_context: For ``rediss``: the TLS context (default: the system's trust store).
        protocol: RESP version (3, or 2 for replies shaped as RESP2).

    Raises:
        ValueError: The URL is not understood, or an option is out of range (the message
            names it; checked before any I/O).
        TypeError: An option has the wrong type (the message names it).
        RedisUnavailableError: The server (or no seed / sentinel) could be reached.
        ResponseError: The server refused the handshake (``WRONGPASS``, bad database...).

    Cancellation:
        The client owns a task group (connection readers, writers, watchdogs); leaving the
        block cancels it and closes every connection. Requests still in flight then fail with
        ``ConnectionLostError``.
    """
    connect_timeout = check_seconds("connect_timeout", connect_timeout)
    command_timeout = check_seconds("command_timeout", command_timeout)
    health_check_interval = check_seconds("health_check_interval", health_check_interval)
    max_blocking_connections = check_count("max_blocking_connections", max_blocking_connections)
    max_pending = check_count("max_pending", max_pending)
    check_client_name(client_name)
    if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(
            f"ssl_context must be an ssl.SSLContext or None, not {type(ssl_context).__name__}"
        )
    if isinstance(protocol, bool) or protocol not in (2, 3):
        raise ValueError(f"protocol must be 2 or 3, got {protocol!r}")
    parsed = parse_url(url)
    check_client_name(parsed.options.get("client_name"))  # the URL's ?client_name=
    if parsed.tls and ssl_context is None:
        ssl_context = ssl.create_default_context()
    settings = ConnectionSettings(
        username=parsed.username,
        password=parsed.password,
        db=parsed.db,
        client_name=client_name or parsed.options.get("client_name"),
        protocol=protocol,
        ssl_context=ssl_context if parsed.tls else None,
        connect_timeout=connect_timeout,
        command_timeout=command_timeout,
        health_check_interval=health_check_interval,
        max_pending=max_pending,
    )
    failure: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            topology = _topology(parsed, settings, tg, max_blocking_connections)
            try:
                try:
                    await topology.start()
                except Exception as exc:
                    failure = exc  # raised below, outside the task group (not in a group)
                else:
                    try:
                        yield Client(topology, settings, url)
                    except BaseException as exc:
                        failure = exc
                        raise
            finally:
                with anyio.CancelScope(shield=True):
                    await topology.aclose()
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The client's own tasks never raise: an error of the block comes out as it was
        # raised, not wrapped in a group by the client's task group.
        if failure is None or len(group.exceptions) != 1 or group.exceptions[0] is not failure:
            raise
    if failure is not None:
        raise failure


def _topology(
    parsed: ParsedURL,
    settings: ConnectionSettings,
    tg: anyio.abc.TaskGroup,
    max_blocking: int,
) -> Topology:
    if parsed.kind == "cluster":
        return Cluster(tg, parsed.addresses, settings, max_blocking=max_blocking)
    if parsed.kind == "sentinel":
        resolve = sentinel_resolver(parsed, settings)
        node = Node(tg, resolve, settings, max_blocking=max_blocking, name=str(parsed.service))
        tg.start_soon(watch_failovers, node, parsed, settings)
        return Standalone(node, follow_failover=True)
    address = parsed.addresses[0]
    node = Node(tg, _fixed(address), settings, max_blocking=max_blocking, name=str(address))
    return Standalone(node)
