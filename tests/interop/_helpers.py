"""Waiting helpers of the interop tests (polling with deadlines, collecting events)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio

from pulse_trio.streaming import Event


async def wait_until(predicate: Callable[[], bool], *, within: float = 5.0, what: str = "") -> None:
    """Poll ``predicate`` until it holds; fail the test after ``within`` seconds."""
    with anyio.move_on_after(within):
        while not predicate():
            await anyio.sleep(0.005)
        return
    raise AssertionError(f"condition not met within {within}s: {what or predicate}")


@contextlib.asynccontextmanager
async def collecting(source: Any) -> AsyncIterator[list[Event]]:
    """Consume a reader or sink in a background task into the yielded list."""
    events: list[Event] = []

    async def consume() -> None:
        async for event in source:
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
        what=f"{count} events (have {len(events)})",
    )


@contextlib.asynccontextmanager
async def consuming(sink: Any, *, ack: bool = True) -> AsyncIterator[list[Event]]:
    """Consume a sink in a background task into the yielded list, acking each event if ``ack``."""
    events: list[Event] = []

    async def consume() -> None:
        async for event in sink:
            events.append(event)
            if ack:
                await sink.ack(event)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        yield events
        tg.cancel_scope.cancel()


async def consumer_names(client: Any, stream: str, group: str) -> set[str]:
    """The consumers of ``group`` on ``pulse:stream:<stream>`` (XINFO CONSUMERS)."""
    raw = await client.xinfo_consumers(f"pulse:stream:{stream}", group)
    names = set()
    for item in raw:
        fields = {k.decode() if isinstance(k, bytes) else k: v for k, v in item.items()}
        name = fields["name"]
        names.add(name.decode() if isinstance(name, bytes) else name)
    return names
