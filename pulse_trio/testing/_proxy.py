"""A loopback TCP proxy that injects network faults between a client and a server.

Point a client at :attr:`FaultProxy.url` instead of the server's URL; bytes are forwarded
both ways until a fault is injected:

- :meth:`FaultProxy.freeze` silences every connection (and every new one) while its sockets
  stay open: the peer sees neither an error nor a close, exactly like a connection silently
  dropped by a NAT or a load balancer, or a network partition. :meth:`FaultProxy.heal` lets
  the bytes flow again (what was held is delivered).
- :meth:`FaultProxy.freeze_subscribers` silences only the connections that sent a
  ``SUBSCRIBE`` (half-open pub/sub connections).
- :meth:`FaultProxy.cut` closes every connection at once (the peer sees the close); new
  connections are forwarded as usual, unless :meth:`FaultProxy.refuse` is on.
- :meth:`FaultProxy.delay` holds each chunk of bytes for a while before forwarding it
  (latency), in one direction or both.
- :meth:`FaultProxy.drop` discards the bytes of one direction: requests never reach the
  server (``"up"``), or replies never reach the client (``"down"``).
"""

from __future__ import annotations

import contextlib
import enum
import urllib.parse
from types import TracebackType

import anyio
import anyio.abc
import attrs

from .._errors import PulseError


class Direction(enum.Enum):
    """Which way bytes travel through the proxy."""

    #: From the client to the server (requests).
    UP = "up"
    #: From the server to the client (replies, pushed messages).
    DOWN = "down"


DirectionLike = Direction | str


def _directions(direction: DirectionLike | None) -> frozenset[Direction]:
    if direction is None or direction == "both":
        return frozenset(Direction)
    try:
        return frozenset({Direction(direction)})
    except ValueError:
        raise ValueError(f"direction must be 'up', 'down' or 'both', not {direction!r}") from None


@attrs.define(eq=False)
class Link:
    """One client connection through the proxy.

    Attributes:
        subscriber: Whether the client sent a ``SUBSCRIBE`` (``PSUBSCRIBE``, ``SSUBSCRIBE``)
            on it; :meth:`FaultProxy.freeze_subscribers` freezes those. Writable, so a test
            can pick connections by hand.
        frozen: Whether it forwards nothing now.
        closed: Whether it was closed (by either side, or by :meth:`FaultProxy.cut`).
    """

    subscriber: bool = False
    frozen: bool = False
    closed: bool = False
    _scope: anyio.CancelScope = attrs.field(factory=anyio.CancelScope, repr=False)
    _thawed: anyio.Event = attrs.field(factory=anyio.Event, repr=False)

    def freeze(self) -> None:
        """Stop forwarding on this connection, keeping its sockets open."""
        if not self.frozen:
            self.frozen = True
            self._thawed = anyio.Event()

    def thaw(self) -> None:
        """Forward again on this connection (the bytes held while frozen first)."""
        self.frozen = False
        self._thawed.set()

    def close(self) -> None:
        """Close both sides of this connection."""
        self._scope.cancel()


class FaultProxyError(PulseError):
    """The proxy was used outside its ``async with`` block."""


class FaultProxy:
    """Forwards ``127.0.0.1:<port>`` to a server, and injects faults on demand.

    Use it as an async context manager, in the event loop of the test::

        async with FaultProxy(server_url) as proxy, pulse_trio.connect(proxy.url) as client:
            proxy.freeze()        # a partition: nothing goes through, nothing is closed
            ...
            proxy.heal()

    Args:
        target: The server: a ``redis://host:port`` URL, or a port of 127.0.0.1.
        host: The target's host when ``target`` is a port.

    Raises:
        ValueError: ``target`` is neither a port nor a ``redis://`` URL with a port.

    Cancellation:
        Leaving the block, also by cancellation, closes the listener and every connection.
    """

    def __init__(self, target: str | int, *, host: str = "127.0.0.1") -> None:
        if isinstance(target, bool) or not isinstance(target, int | str):
            raise TypeError(f"target must be a URL or a port, not {type(target).__name__}")
        if isinstance(target, str):
            parsed = urllib.parse.urlsplit(target)
            if parsed.scheme not in ("redis", "rediss") or parsed.port is None:
                raise ValueError(f"target must be a redis://host:port URL, not {target!r}")
            host, target = parsed.hostname or host, parsed.port
        if not 0 < target < 65536:
            raise ValueError(f"target port out of range: {target!r}")
        self.target_host = host
        self.target_port = target
        self.port = 0
        #: Every connection made through the proxy so far (open or closed), oldest first.
        self.links: list[Link] = []
        self._frozen = False
        self._refusing = False
        self._delay: dict[Direction, float] = dict.fromkeys(Direction, 0.0)
        self._dropping: set[Direction] = set()
        self._tg: anyio.abc.TaskGroup | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    # --------------------------------------------------------------------- addresses

    @property
    def url(self) -> str:
        """A ``redis://`` URL that goes through the proxy."""
        if not self.port:
            raise FaultProxyError("the proxy is not running: enter it with `async with`")
        return f"redis://127.0.0.1:{self.port}"

    @property
    def open_links(self) -> list[Link]:
        """The connections open now."""
        return [link for link in self.links if not link.closed]

    # ------------------------------------------------------------------------ faults

    def freeze(self) -> None:
        """Silence every connection, and every connection opened from now on (a partition).

        Sockets stay open: clients see no error, only missing replies.
        """
        self._frozen = True
        for link in self.links:
            link.freeze()

    #: Alias of :meth:`freeze`.
    freeze_all = freeze

    def freeze_subscribers(self) -> int:
        """Silence every open connection that subscribed; return how many were frozen now."""
        count = 0
        for link in self.open_links:
            if link.subscriber and not link.frozen:
                link.freeze()
                count += 1
        return count

    def cut(self) -> int:
        """Close every open connection (both sides); return how many were closed.

        New connections are accepted as usual (see :meth:`refuse`).
        """
        links = self.open_links
        for link in links:
            link.close()
        return len(links)

    def refuse(self, refusing: bool = True) -> None:
        """Close new connections at once (``True``), or accept them again (``False``)."""
        self._refusing = refusing

    def delay(self, seconds: float, direction: DirectionLike = "both") -> None:
        """Hold every chunk of bytes ``seconds`` before forwarding it (``0``: no delay).

        Order is kept: each direction of a connection forwards one chunk at a time.

        Args:
            seconds: The added latency, per chunk.
            direction: ``"up"`` (requests), ``"down"`` (replies) or ``"both"``.
        """
        if not seconds >= 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        for which in _directions(direction):
            self._delay[which] = float(seconds)

    def drop(self, direction: DirectionLike) -> None:
        """Discard the bytes travelling ``direction`` (``"up"``, ``"down"`` or ``"both"``).

        Unlike :meth:`freeze`, what is dropped is gone for good, also after :meth:`heal`.
        """
        self._dropping |= _directions(direction)

    def heal(self) -> None:
        """Undo every fault: thaw, forward both ways, no delay, accept connections."""
        self._frozen = False
        self._refusing = False
        self._dropping.clear()
        self._delay = dict.fromkeys(Direction, 0.0)
        for link in self.links:
            link.thaw()

    # --------------------------------------------------------------------- plumbing

    async def _pump(
        self,
        source: anyio.abc.ByteStream,
        sink: anyio.abc.ByteStream,
        link: Link,
        direction: Direction,
    ) -> None:
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            while True:
                data = await source.receive()
                if direction is Direction.UP and b"SUBSCRIBE" in data.upper():
                    link.subscriber = True
                while link.frozen:
                    await link._thawed.wait()
                if self._delay[direction]:
                    await anyio.sleep(self._delay[direction])
                    while link.frozen:
                        await link._thawed.wait()
                if direction in self._dropping:
                    continue
                await sink.send(data)

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        link = Link()
        if self._frozen:
            link.freeze()
        self.links.append(link)
        try:
            async with client:
                if self._refusing:
                    return
                with link._scope:
                    try:
                        server = await anyio.connect_tcp(self.target_host, self.target_port)
                    except OSError:
                        return
                    async with server, anyio.create_task_group() as tg:

                        async def pump_then_close(
                            a: anyio.abc.ByteStream, b: anyio.abc.ByteStream, d: Direction
                        ) -> None:
                            await self._pump(a, b, link, d)
                            # One side closed: close the other side too, unless frozen
                            # (not even the close goes through a silent connection).
                            while link.frozen:
                                await link._thawed.wait()
                            tg.cancel_scope.cancel()

                        tg.start_soon(pump_then_close, client, server, Direction.UP)
                        tg.start_soon(pump_then_close, server, client, Direction.DOWN)
        finally:
            link.closed = True

    async def __aenter__(self) -> FaultProxy:
        async with contextlib.AsyncExitStack() as stack:
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
            await stack.enter_async_context(listener)
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(self._tg.cancel_scope.cancel)
            self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
            self._tg.start_soon(listener.serve, self._handle)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
        self._tg = None

    def __repr__(self) -> str:
        where = f"127.0.0.1:{self.port}" if self.port else "(not running)"
        return (
            f"<FaultProxy {where} -> {self.target_host}:{self.target_port} "
            f"open={len(self.open_links)} frozen={self._frozen}>"
        )
