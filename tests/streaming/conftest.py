"""Helpers shared by the streaming tests: collecting readers, waiting with deadlines."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio

from pulse_trio.streaming import Event, Reader


async def wait_until(predicate: Callable[[], bool], *, within: float = 5.0, what: str = "") -> None:
    """Poll ``predicate`` every 5 ms until it is true; fail the test after ``within`` s."""
    with anyio.move_on_after(within):
        while not predicate():
            await anyio.sleep(0.005)
        return
    raise AssertionError(f"condition not met within {within}s: {what or predicate}")


async def wait_until_async(
    predicate: Callable[[], Awaitable[bool]], *, within: float = 5.0, what: str = ""
) -> None:
    """Like :func:`wait_until` for a predicate that needs I/O."""
    with anyio.move_on_after(within):
        while not await predicate():
            await anyio.sleep(0.005)
        return
    raise AssertionError(f"condition not met within {within}s: {what or predicate}")


@contextlib.asynccontextmanager
async def collecting(reader: Reader) -> AsyncIterator[list[Event]]:
    """Consume ``reader`` in a background task into the yielded list (until the block ends)."""
    events: list[Event] = []

    async def consume() -> None:
        async for event in reader:
            events.append(event)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        yield events
        tg.cancel_scope.cancel()


async def wait_count(events: list[Event], count: int, within: float = 5.0) -> None:
    """Wait until ``events`` holds at least ``count`` events."""
    await wait_until(
        lambda: len(events) >= count,
        within=within,
        what=f"{count} events (have {len(events)}: {names(events)[-20:]})",
    )


def names(events: list[Event]) -> list[str]:
    """The event names, in order."""
    return [event.event_name for event in events]
