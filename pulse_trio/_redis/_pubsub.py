"""Subscriptions: a dedicated subscriber connection that survives reconnections.

:class:`Subscription` owns a task group with one task that connects, subscribes, reads
messages into a bounded memory channel, and when the connection is lost (or stops answering
PINGs) reconnects with jittered backoff and subscribes again. Each reconnection is reported to
the consumer, in order with the messages, as a :class:`Resubscribed` item: messages published
while it was disconnected are lost, so a consumer that mirrors state resyncs on it.

A consumer that can act on most messages synchronously may install a handler
(:meth:`Subscription.set_handler`): a message that arrives while the consumer waits for the
next item, with nothing buffered before it, is handed to the handler in the reader task
instead of waking the consumer, which saves a task switch per message (the replicated map's
notifications take this path). Order is kept: the handler only ever runs when the consumer
would have received that message next and is not busy with an earlier one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final, Self

import anyio
import anyio.abc
import attrs
import sniffio

from .._errors import RedisUnavailableError
from ._direct import NETWORK_ERRORS, RECEIVE_SIZE, DirectConnection
from ._fast_io import fast_io
from ._resp import Arg, Message, Pong, PubSubState, ResponseError
from ._settings import Backoff, ConnectionSettings

logger = logging.getLogger("pulse_trio.redis")

#: Messages buffered between the subscriber connection and the consumer; when full, the
#: connection is not read until the consumer catches up (Redis buffers, then may drop the
#: subscriber past its ``client-output-buffer-limit pubsub``).
SUBSCRIPTION_BUFFER: Final = 1000


#: What :meth:`Subscription.set_handler` installs: called with a message in the reader task,
#: returns whether it consumed it (``False``: the message is delivered to the consumer).
MessageHandler = Callable[[Message], bool]


@attrs.frozen
class _HandlerFailed:
    """An exception of the handler, raised by the consumer's next ``__anext__``."""

    error: Exception


@attrs.frozen
class Resubscribed:
    """The subscriber connection was lost and is subscribed again on a new one.

    Messages published in between were not received: resync whatever they describe.

    Attributes:
        reconnects: How many times the subscription reconnected so far (1 for the first).
    """

    reconnects: int


#: What the buffer between the reader task and the consumer holds.
_Item = Message | Resubscribed | _HandlerFailed


class Subscription:
    """Messages of channels and patterns, on a dedicated connection, across reconnections.

    Obtained from ``client.subscribe(...)``; iterate it with ``async for item in sub``: items
    are :class:`~._resp.Message` (``channel``, ``data``, ``pattern``) or :class:`Resubscribed`.
    The block starts once the server confirmed every initial subscription.

    Attributes:
        reconnects: How many times the connection was replaced.

    Cancellation:
        Leaving the block cancels the subscriber task and closes its connection. An exception
        raised in the block propagates unchanged (not in an exception group).
    """

    def __init__(
        self,
        open_connection: Callable[[], Awaitable[DirectConnection]],
        settings: ConnectionSettings,
        channels: tuple[Arg, ...],
        patterns: tuple[Arg, ...],
        buffer_size: int = SUBSCRIPTION_BUFFER,
    ) -> None:
        self._open = open_connection
        self._settings = settings
        self._state = PubSubState()
        self._state.subscribe(channels, patterns)
        self._buffer_size = buffer_size
        self._conn: DirectConnection | None = None
        self._conn_scope: anyio.CancelScope | None = None
        self._write_lock = anyio.Lock()
        self._pongs = 0
        self._delivering = False  # the reader waits for room in the buffer
        self._started = False
        self._last_activity = 0.0
        self._pong_event = anyio.Event()
        self._confirmed = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self._handler: MessageHandler | None = None
        # The consumer waits in __anext__: it is done with the items it received (cleared
        # as soon as an item is put for it).
        self._consumer_idle = False
        self.reconnects = 0

    def __repr__(self) -> str:
        return (
            f"<Subscription channels={sorted(self._state.channels)} "
            f"patterns={sorted(self._state.patterns)} reconnects={self.reconnects}>"
        )

    async def __aenter__(self) -> Self:
        # Made here, not in __init__: a subscription never entered leaves nothing unclosed.
        self._send, self._receive = anyio.create_memory_object_stream[_Item](self._buffer_size)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._tg.start(self._run)
        except BaseException as exc:
            self._tg.cancel_scope.cancel()
            try:
                await self._tg.__aexit__(type(exc), exc, exc.__traceback__)
            except BaseExceptionGroup as group:
                # Raise what subscribing raised (RedisUnavailableError...), not a group.
                if len(group.exceptions) != 1 or group.exceptions[0] is not exc:
                    raise
            finally:
                self._send.close()
                self._receive.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The subscriber task never raises: an error of the block propagates as it was
            # raised (returning None re-raises it), not wrapped in the task group's group.
            if exc is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc:
                return None
            raise
        finally:
            self._send.close()
            self._receive.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message | Resubscribed:
        self._consumer_idle = True
        try:
            item = await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        finally:
            self._consumer_idle = False
        if isinstance(item, _HandlerFailed):
            raise item.error
        return item

    def set_handler(self, handler: MessageHandler | None) -> None:
        """Have ``handler`` take the messages the waiting consumer would receive next.

        While a handler is installed, a message that arrives while the consumer (one task)
        waits in ``__anext__`` and nothing is buffered for it is first given to the handler,
        called synchronously in the subscription's reader task. It returns ``True`` when it
        consumed the message (the consumer is not woken for it), ``False`` to have it
        delivered as usual (then, and until the consumer received it, later messages are
        delivered too: order is kept). :class:`Resubscribed` items always go to the consumer.
        The handler must not block. An exception it raises removes it and is raised by the
        consumer's next ``__anext__``, in order with the messages.

        Args:
            handler: The handler, or ``None`` to remove it.
        """
        self._handler = handler

    async def _write(self) -> None:
        conn = self._conn
        data = self._state.data_to_send()
        if conn is None or not data:
            return
        async with self._write_lock:
            try:
                await conn.stream.send(data)
            except NETWORK_ERRORS:
                self._drop_connection()

    def _drop_connection(self) -> None:
        if self._conn_scope is not None:
            self._conn_scope.cancel()

    async def subscribe(self, *channels: Arg, patterns: tuple[Arg, ...] = ()) -> None:
        """Subscribe to more channels (and patterns); returns once the request is sent."""
        self._state.subscribe(channels, patterns)
        await self._write()

    async def unsubscribe(self, *channels: Arg, patterns: tuple[Arg, ...] = ()) -> None:
        """Unsubscribe from channels (and patterns); returns once the request is sent."""
        self._state.unsubscribe(channels, patterns)
        await self._write()

    async def ping(self) -> None:
        """PING the subscriber connection and wait for the answer.

        A connection that does not answer within the client's ``command_timeout`` is
        replaced, and :class:`Resubscribed` follows.

        Raises:
            RedisUnavailableError: No answer in time, or no connection right now.
        """
        timeout = self._settings.command_timeout
        conn = self._conn
        if conn is None:
            raise RedisUnavailableError("the subscription is reconnecting")
        target = self._pongs + 1
        self._state.ping()
        await self._write()
        while self._pongs < target:
            with anyio.move_on_after(timeout) as scope:
                await self._pong_event.wait()
            silent_for = anyio.current_time() - self._last_activity
            if scope.cancelled_caught and not self._delivering and silent_for >= timeout:
                if self._conn is conn:  # not already replaced while this PING waited
                    self._drop_connection()
                raise RedisUnavailableError(
                    f"the subscriber connection did not answer PING in {timeout} s"
                )
            # Woken by a PONG (maybe an earlier PING's), or timed out while the reader was
            # held up by a full buffer or has read something within the timeout (a slow
            # consumer draining, not a dead connection): wait on.

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        backoff = Backoff()
        started = False
        while True:
            try:
                conn = await self._open()
            except (RedisUnavailableError, ResponseError) as exc:
                if not started:
                    raise
                delay = backoff.next_delay()
                logger.warning("subscriber reconnect failed (%s); retrying in %.2f s", exc, delay)
                await anyio.sleep(delay)
                continue
            self._conn = conn
            self._state.resubscribe()
            self._conn_scope = scope = anyio.CancelScope()
            lost: BaseException | None = None
            refused: ResponseError | None = None
            try:
                with scope:
                    await self._write()
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._health)
                        try:
                            await self._read_until_confirmed(conn)
                            if started:
                                self.reconnects += 1
                                await self._deliver(Resubscribed(self.reconnects))
                            else:
                                started = self._started = True
                                task_status.started()
                            backoff.reset()
                            await self._read(conn)
                        except (*NETWORK_ERRORS, TimeoutError) as exc:
                            lost = exc
                            tg.cancel_scope.cancel()
                        except ResponseError as exc:  # a subscription was refused
                            refused = exc
                            tg.cancel_scope.cancel()
            finally:
                self._conn = None
                self._conn_scope = None
                with anyio.CancelScope(shield=True):
                    await conn.aclose()
            if refused is not None:
                raise refused
            # Here the connection was lost, or stopped answering PINGs (scope cancelled).
            if not started:
                raise RedisUnavailableError(f"subscribing failed: {lost!r}") from lost
            logger.warning("subscriber connection lost (%r); reconnecting", lost)
            await anyio.sleep(backoff.next_delay())

    async def _read_until_confirmed(self, conn: DirectConnection) -> None:
        receive = _receiver(conn.stream)
        with anyio.fail_after(self._settings.command_timeout):
            while not self._state.ready:
                await self._read_once(receive)

    async def _read(self, conn: DirectConnection) -> None:
        receive = _receiver(conn.stream)
        while True:
            await self._read_once(receive)

    async def _read_once(self, receive: Callable[[], Awaitable[bytes]]) -> None:
        data = await receive()
        self._last_activity = anyio.current_time()
        for event in self._state.receive_data(data):
            if isinstance(event, Message):
                handler = self._handler
                if (
                    handler is not None
                    and self._consumer_idle
                    and not self._send.statistics().current_buffer_used
                ):
                    try:
                        if handler(event):
                            continue
                    except Exception as exc:
                        self._handler = None
                        await self._deliver(_HandlerFailed(exc))
                        continue
                await self._deliver(event)
            elif isinstance(event, Pong):
                self._pongs += 1
                pong, self._pong_event = self._pong_event, anyio.Event()
                pong.set()
            elif isinstance(event, ResponseError):
                if not self._started:  # an initial subscription refused (NOPERM...)
                    raise event
                logger.warning("error on the subscriber connection: %s", event.message)

    async def _deliver(self, item: _Item) -> None:
        """Buffer ``item`` for the consumer, waiting for room when the buffer is full."""
        try:
            self._send.send_nowait(item)
        except anyio.WouldBlock:
            pass
        else:
            self._consumer_idle = False  # it has an item to take now
            return
        # The consumer is behind: stop reading (back-pressure) without letting the health
        # check mistake the silence for a dead connection.
        self._delivering = True
        try:
            await self._send.send(item)
            self._consumer_idle = False
        finally:
            self._delivering = False
            self._last_activity = anyio.current_time()

    async def _health(self) -> None:
        """PING a subscriber connection that has been quiet for ``health_check_interval``."""
        interval = self._settings.health_check_interval
        self._last_activity = anyio.current_time()
        while True:
            await anyio.sleep_until(self._last_activity + interval)
            if self._delivering:
                await anyio.sleep(interval)
                continue
            if anyio.current_time() - self._last_activity < interval:
                continue
            try:
                await self.ping()
            except RedisUnavailableError:
                return


def _receiver(stream: anyio.abc.ByteStream) -> Callable[[], Awaitable[bytes]]:
    """How the reader task reads ``stream``: ``stream.receive``, or on Trio over a plain
    socket, a wait until the socket is readable and then one ``recv``.

    A stream's ``receive`` first tries to read, and waits only when nothing has arrived; the
    reader task of a subscription has nearly always read everything when it comes back for
    more, so that first try fails (a syscall and an exception per message for nothing).
    Anything the direct read cannot take (the end of the stream, an error, a spurious wake-up)
    is left to ``stream.receive``, which raises or waits as usual.
    """
    io = fast_io(stream)
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
    if io is None or raw is None or sniffio.current_async_library() != "trio":
        return functools.partial(stream.receive, RECEIVE_SIZE)
    import trio

    wait_readable = trio.lowlevel.wait_readable
    poll = io.poll

    async def receive() -> bytes:
        await wait_readable(raw)
        data = poll(RECEIVE_SIZE)
        if data is None:
            data = await stream.receive(RECEIVE_SIZE)
        return data

    return receive
