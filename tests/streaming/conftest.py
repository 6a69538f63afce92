"""Helpers shared by the streaming tests: collecting readers, waiting with deadlines."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio

from pulse_trio.streaming import Event, Reader

from .._util import wait_until


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
        timeout=within,
        what=f"{count} events (have {len(events)}: {names(events)[-20:]})",
    )


def names(events: list[Event]) -> list[str]:
    """The event names, in order."""
    return [event.event_name for event in events]
