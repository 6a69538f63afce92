"""The event buffer between the read loops and the iteration: what it costs per event (task
switches) and what it still guarantees (order, fairness, cancellation, closing)."""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import pytest

from pulse_trio import streaming
from pulse_trio.streaming import OLDEST, Event, Stream
from pulse_trio.streaming._buffer import YIELD_EVERY, EventBuffer

from .._util import Turns

pytestmark = pytest.mark.anyio

Client = Any


def _event(n: int) -> Event:
    return Event(
        id=f"{n}-0", stream_name="s", sink_name=None, event_name="e", topic=None, payload=b""
    )


class _Wakes:
    """Counts how often ``put`` waits: patched around the buffer's room event."""

    def __init__(self, buffer: EventBuffer) -> None:
        self.buffer = buffer
        self.waits = 0
        self._put = buffer.put

    async def put(self, event: Event) -> None:
        if not self.buffer.free:
            self.waits += 1
        await self._put(event)


async def test_take_yields_every_few_events() -> None:
    buffer = EventBuffer(8)
    total = 200
    taken: list[str] = []
    other_ran_at: list[int] = []

    async def producer() -> None:
        for n in range(total):
            await buffer.put(_event(n))

    async def other() -> None:
        while len(taken) < total:
            other_ran_at.append(len(taken))
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        tg.start_soon(other)
        while len(taken) < total:
            taken.append((await buffer.take()).id)

    assert taken == [f"{n}-0" for n in range(total)]  # in order, none lost
    # The consumer, which awaits nothing but take(), still let the other task run: never
    # more than YIELD_EVERY events taken between two of its turns.
    gaps = [b - a for a, b in itertools.pairwise(other_ran_at)]
    assert gaps
    assert max(gaps) <= YIELD_EVERY + 1, max(gaps)


async def test_a_full_buffer_wakes_the_read_loop_once_per_half_buffer() -> None:
    buffer = EventBuffer(8)
    wakes = _Wakes(buffer)
    total = 200
    taken: list[str] = []

    async def producer() -> None:
        for n in range(total):
            await wakes.put(_event(n))

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        while len(taken) < total:
            taken.append((await buffer.take()).id)
            await anyio.lowlevel.checkpoint()  # a consumer that awaits per event (an ack)

    assert taken == [f"{n}-0" for n in range(total)]
    # Woken when half (4 events) was taken, not after each event taken: one wait per 4.
    assert wakes.waits <= total // 4 + 2, wakes.waits


async def test_take_is_cancellable_within_a_few_events() -> None:
    buffer = EventBuffer(1000)
    for n in range(1000):
        await buffer.put(_event(n))
    taken = 0
    with anyio.CancelScope() as scope:
        scope.cancel()
        while True:
            await buffer.take()
            taken += 1
    assert scope.cancelled_caught
    assert taken <= YIELD_EVERY


async def test_close_wakes_both_sides() -> None:
    buffer = EventBuffer(1)
    await buffer.put(_event(1))
    outcomes: list[str] = []

    async def blocked_put() -> None:
        try:
            await buffer.put(_event(2))
        except anyio.ClosedResourceError:
            outcomes.append("put closed")

    async def blocked_take(other: EventBuffer) -> None:
        try:
            await other.take()
        except anyio.EndOfStream:
            outcomes.append("take ended")

    empty = EventBuffer(1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(blocked_put)
        tg.start_soon(blocked_take, empty)
        await anyio.wait_all_tasks_blocked()
        buffer.close()
        empty.close()
    assert sorted(outcomes) == ["put closed", "take ended"]
    with pytest.raises(anyio.EndOfStream):
        await buffer.take()  # events still buffered are dropped with the close
    with pytest.raises(ValueError, match="at least one"):
        EventBuffer(0)


async def test_a_consumer_that_awaits_nothing_does_not_starve_other_tasks(
    client: Client, unique: str
) -> None:
    stream = Stream(client, unique, max_len=0)
    await stream.add_many([("e", b"x")] * 300)
    ticker = Turns()
    seen = 0
    with anyio.fail_after(10):
        async with (
            stream.open_sink(unique, start=OLDEST) as sink,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(ticker.run)
            async for event in sink:
                sink.ack_nowait(event)
                seen += 1
                if seen == 300:
                    break
            tg.cancel_scope.cancel()
    # 300 events without an await of its own: the ticker ran at least once per
    # YIELD_EVERY of them.
    assert ticker.count >= 300 // YIELD_EVERY, ticker.count
    await stream.destroy()


async def test_a_reader_with_a_small_buffer_delivers_everything_in_order(
    client: Client, unique: str
) -> None:
    stream = Stream(client, unique, max_len=0)
    ids = [await stream.add("e", str(n).encode()) for n in range(50)]
    got: list[str] = []
    with anyio.fail_after(10):
        async with stream.open_reader(start=OLDEST, buffer_size=3, max_polled=7) as reader:
            async for event in reader:
                got.append(event.id)
                if len(got) == len(ids):
                    break
    assert got == ids
    assert isinstance(reader, streaming.Reader)
    await stream.destroy()
