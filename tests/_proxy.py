"""A loopback TCP proxy that can make chosen connections go silent (half-open).

Bytes are forwarded both ways until :meth:`FreezingProxy.freeze_subscribers` is called: from
then on, every connection that has sent a SUBSCRIBE stops forwarding in both directions while
its sockets stay open: the peer sees neither an error nor a close, exactly like a connection
silently dropped by a NAT or load balancer. New connections are forwarded normally.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import attrs


@attrs.define(eq=False)
class _Link:
    subscriber: bool = False
    frozen: bool = False


@attrs.define
class FreezingProxy:
    """Forwarder from ``self.port`` to ``127.0.0.1:target_port``."""

    target_port: int
    port: int = 0
    links: list[_Link] = attrs.field(factory=list)
    #: Set by :meth:`freeze_all`: new connections are silent from the start too.
    all_frozen: bool = False

    @property
    def url(self) -> str:
        """A redis:// URL that goes through the proxy."""
        return f"redis://127.0.0.1:{self.port}"

    def freeze_subscribers(self) -> int:
        """Silence every connection that subscribed; return how many were frozen."""
        count = 0
        for link in self.links:
            if link.subscriber and not link.frozen:
                link.frozen = True
                count += 1
        return count

    def freeze_all(self) -> None:
        """Silence every connection, and every connection opened from now on (a partition)."""
        self.all_frozen = True
        for link in self.links:
            link.frozen = True

    async def _pump(
        self, source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream, link: _Link, up: bool
    ) -> None:
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            while True:
                data = await source.receive()
                if up and b"SUBSCRIBE" in data.upper():
                    link.subscriber = True
                if link.frozen:
                    await anyio.sleep_forever()
                await sink.send(data)

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        link = _Link(frozen=self.all_frozen)
        self.links.append(link)
        async with (
            client,
            await anyio.connect_tcp("127.0.0.1", self.target_port) as server,
            anyio.create_task_group() as tg,
        ):

            async def pump_then_cancel(
                a: anyio.abc.ByteStream, b: anyio.abc.ByteStream, up: bool
            ) -> None:
                await self._pump(a, b, link, up)
                if not link.frozen:
                    tg.cancel_scope.cancel()

            tg.start_soon(pump_then_cancel, client, server, True)
            tg.start_soon(pump_then_cancel, server, client, False)


@contextlib.asynccontextmanager
async def freezing_proxy(target_port: int) -> AsyncIterator[FreezingProxy]:
    """Run a :class:`FreezingProxy` for the duration of the block."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    proxy = FreezingProxy(target_port, port=listener.extra(anyio.abc.SocketAttribute.local_port))
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, proxy._handle)
        try:
            yield proxy
        finally:
            tg.cancel_scope.cancel()
