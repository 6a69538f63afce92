"""Helpers shared by the tests: polling with deadlines instead of sleeps, collecting events."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import anyio.abc

from pulse_trio import rmap
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
                # Shielded: coredis leaks the buffers of a connection whose creation is
                # cancelled (ResourceWarning), and the test cancels this task at any point.
                with anyio.CancelScope(shield=True):
                    await sink.ack(event)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        yield events
        tg.cancel_scope.cancel()


@contextlib.contextmanager
def coredis_leaks_collected() -> Iterator[None]:
    """Quieten coredis for the block, and collect the garbage at its end.

    coredis 6.9 leaves the memory streams of a connection that failed to (re)connect unclosed
    (their ``__del__`` warns; the warning is filtered in pyproject.toml) and logs the failure
    with its traceback. A captured log record would keep those buffers alive past the
    collection, so that their warning would surface in a later test.
    """
    coredis_logger = logging.getLogger("coredis")
    level = coredis_logger.level
    coredis_logger.setLevel(logging.CRITICAL)
    try:
        yield
        gc.collect()
    finally:
        coredis_logger.setLevel(level)
