"""Waiting helpers of the interop tests (polling with deadlines, collecting events)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio

from pulse_trio.streaming import Event

from .._util import collecting as collecting
from .._util import wait_count as wait_count
from .._util import wait_until as wait_until


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
