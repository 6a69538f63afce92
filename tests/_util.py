"""Helpers shared by the tests: polling with deadlines instead of sleeps, collecting events."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NoReturn

import anyio
import anyio.abc
import anyio.lowlevel

import pulse_trio
from pulse_trio import rmap
from pulse_trio._redis._client import Standalone
from pulse_trio._redis._settings import ConnectionSettings
from pulse_trio.streaming import Event


async def wait_until(
    predicate: Callable[[], bool], *, within: float = 5.0, interval: float = 0.005, what: str = ""
) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``within`` seconds."""
    with anyio.move_on_after(within):
        while not predicate():
            await anyio.sleep(interval)
        return
    raise AssertionError(f"condition not met within {within}s: {what or predicate}")


async def wait_until_async(
    predicate: Callable[[], Awaitable[bool]],
    *,
    within: float = 5.0,
    interval: float = 0.005,
    what: str = "",
) -> None:
    """Like :func:`wait_until` for a predicate that needs I/O."""
    with anyio.move_on_after(within):
        while not await predicate():
            await anyio.sleep(interval)
        return
    raise AssertionError(f"condition not met within {within}s: {what or predicate}")


@contextlib.asynccontextmanager
async def collecting(source: Any) -> AsyncIterator[list[Event]]:
    """Consume a reader or sink in a background task into the yielded list (until the block
    ends)."""
    events: list[Event] = []

    async def consume() -> None:
        async for event in source:
            events.append(event)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        yield events
        tg.cancel_scope.cancel()


def names(events: list[Event]) -> list[str]:
    """The event names, in order."""
    return [event.event_name for event in events]


async def wait_count(events: list[Event], count: int, within: float = 5.0) -> None:
    """Wait until ``events`` holds at least ``count`` events."""
    await wait_until(
        lambda: len(events) >= count,
        within=within,
        what=f"{count} events (have {len(events)}: {names(events)[-20:]})",
    )


@contextlib.asynccontextmanager
async def recording(m: rmap.Map) -> AsyncIterator[list[rmap.EventKind]]:
    """Collect ``m``'s change notifications in a list while the block runs."""
    kinds: list[rmap.EventKind] = []

    async def consume(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with m.subscribe() as changes:
            task_status.started()
            async for kind in changes:
                kinds.append(kind)

    async with anyio.create_task_group() as tg:
        await tg.start(consume)
        yield kinds
        tg.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def consuming(sink: Any, *, ack: bool = True) -> AsyncIterator[list[Event]]:
    """Iterate a sink in a background task into the yielded list, acking each event if
    ``ack``."""
    events: list[Event] = []

    async def consume() -> None:
        async for event in sink:
            events.append(event)
            if ack:
                # Shielded: the test cancels this task at any point, and an ack cancelled on
                # the way may or may not have run (the test would not know what is pending).
                with anyio.CancelScope(shield=True):
                    await sink.ack(event)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        yield events
        tg.cancel_scope.cancel()


class _Offline(Standalone):
    """A topology with no server: every request fails the test."""

    def __init__(self) -> None:  # no node: nothing to connect to
        pass

    def _no_io(self) -> NoReturn:
        raise AssertionError("the offline client was asked to talk to Redis")

    async def request(self, args: Sequence[Any], payload: bytes, key: Any) -> Any:
        self._no_io()

    async def request_many(self, commands: Sequence[Any], payloads: list[bytes]) -> list[Any]:
        self._no_io()

    def blocking(self, key: Any) -> Any:
        self._no_io()

    async def start(self) -> None:
        self._no_io()


def offline_client() -> pulse_trio.Client:
    """A :class:`pulse_trio.Client` of one (imaginary) server that fails the test on any I/O:
    for checks that must happen before any I/O."""
    return pulse_trio.Client(_Offline(), ConnectionSettings(), "redis://127.0.0.1:1")


def lent_connections(client: pulse_trio.Client) -> int:
    """How many dedicated connections of ``client``'s pool are lent right now (blocking reads
    in progress). Once every reader and sink is left, none: each borrowed connection went
    back to the pool (or was closed), also after kills, restarts and cancelled reads."""
    return sum(node.blocking_in_use for node in client.statistics())


class Turns:
    """A task that only counts the turns the event loop gives it (for fairness tests): run
    :meth:`run` in a task group, read :attr:`count`."""

    def __init__(self) -> None:
        self.count = 0

    async def run(self) -> None:
        """Count a turn at each checkpoint, forever."""
        while True:
            self.count += 1
            await anyio.lowlevel.checkpoint()
