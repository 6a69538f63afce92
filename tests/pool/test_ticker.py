"""Tickers and schedulers with two nodes (SPEC guarantee 10, reference §12 #20)."""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import pytest

from pulse_trio import pool
from pulse_trio.pool._protocol import ms_to_datetime

from .._util import wait_until
from ._helpers import Recorder, node

pytestmark = pytest.mark.anyio

INTERVAL = 0.1


async def test_g10_defect_20_each_tick_reaches_one_node_and_none_is_lost(
    client: Any, unique: str
) -> None:
    received: list[tuple[str, pool.Tick]] = []

    async def receive(n: pool.Node, label: str, slow: float) -> None:
        async with n.open_ticker("t", INTERVAL) as ticker:
            async for tick in ticker:
                received.append((label, tick))
                await anyio.sleep(slow)  # busy for a while

    async with (
        node(client, unique) as a,
        node(client, unique) as b,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(receive, a, "a", 0.25)
        tg.start_soon(receive, b, "b", 0.25)
        await wait_until(lambda: sum(t.count for _, t in received) >= 20, within=10)
        tg.cancel_scope.cancel()
    ats = [t.at for _, t in received]
    assert len(set(ats)) == len(ats)  # no tick delivered twice
    assert {label for label, _ in received} == {"a", "b"}  # both nodes got ticks
    # No tick lost: the due times plus the counts cover every interval without a gap.
    ordered = sorted((t for _, t in received), key=lambda t: t.at)
    for earlier, later in itertools.pairwise(ordered):
        gap = round((later.at - earlier.at).total_seconds() / INTERVAL)
        assert gap == earlier.count, (earlier, later)


async def test_g10_a_busy_single_receiver_gets_the_piled_up_ticks_counted(
    client: Any, unique: str
) -> None:
    async with node(client, unique) as a, a.open_ticker("t", INTERVAL) as ticker:
        first = await ticker.__anext__()
        await anyio.sleep(INTERVAL * 5.5)  # busy: five more ticks fall due meanwhile
        second = await ticker.__anext__()
        assert second.count >= 5
        assert round((second.at - first.at).total_seconds() / INTERVAL) == first.count


class Producer:
    def __init__(
        self, plans: list[pool.JobPlan], calls: list[str], label: str, active: list[str]
    ) -> None:
        self.name = "producer"
        self._plans = plans
        self._calls = calls
        self._label = label
        self._active = active
        self.overlaps = 0

    async def plan(self) -> pool.JobPlan:
        if self._active:
            self.overlaps += 1
        self._active.append(self._label)
        self._calls.append(self._label)
        await anyio.sleep(0.02)
        self._active.remove(self._label)
        return self._plans[min(len(self._calls), len(self._plans)) - 1]


async def test_schedule_runs_one_producer_at_a_time_and_applies_plans(
    client: Any, unique: str
) -> None:
    handler = Recorder()
    calls: list[str] = []
    plans = [
        pool.JobPlan(start=[("a", b"1"), ("b", b"2")]),
        pool.JobPlan(start=[("a", b"1"), ("b", b"2")]),  # already running: satisfied
        pool.JobPlan(stop=["b"]),
        pool.JobPlan(start=[("c", b"3")], stop_all=True),  # stops "a"
    ]
    async with node(client, unique) as x, node(client, unique) as y:
        await x.add_worker(handler)
        active: list[str] = []
        px, py = Producer(plans, calls, "x", active), Producer(plans, calls, "y", active)
        await x.schedule(px, INTERVAL)
        await y.schedule(py, INTERVAL)
        await wait_until(lambda: len(calls) >= 6, within=10)
        await wait_until(lambda: set(handler.running) == {"c"}, within=5)
    assert px.overlaps == py.overlaps == 0  # one node producing at a time
    assert handler.starts == {"a": 1, "b": 1, "c": 1}
    assert handler.stops["a"] == 1
    assert handler.stops["b"] == 1


async def test_a_receiver_that_comes_late_gets_the_due_tick_at_once(
    client: Any, unique: str
) -> None:
    async with node(client, unique) as a, a.open_ticker("t", 0.5) as ticker:
        await anyio.sleep(0.7)  # nobody waited for the tick due at 0.5 s
        with anyio.fail_after(0.2):  # not one more interval
            tick = await ticker.__anext__()
        assert tick.count == 1


@pytest.mark.parametrize("later", [0, 2])
async def test_g10_a_tick_claimed_for_a_receiver_that_left_is_handed_back_on_close(
    client: Any, unique: str, later: int
) -> None:
    """A tick claimed just as its receiver was cancelled waits in the ticker's buffer for the
    next iteration. If there is none (the ticker closes), closing hands the tick back to the
    pool: another node's receiver gets it (its due time, its count), it is not dropped, also
    when that node received ``later`` ticks meanwhile."""
    claimed: list[tuple[int, int]] = []
    interval_ms = round(INTERVAL * 1000)
    async with (
        node(client, unique) as a,
        node(client, unique) as b,
        b.open_ticker("t", INTERVAL) as other,
    ):
        async with a.open_ticker("t", INTERVAL) as ticker:
            receiver = anyio.CancelScope()
            original = a._io.run

            async def run(name: str, *args: Any) -> Any:
                reply = await original(name, *args)
                if name == "tick" and args[0] == "claim" and reply[0] > 0:
                    claimed.append((int(reply[0]), int(reply[1])))
                    receiver.cancel()  # the receiver leaves as its tick is claimed
                return reply

            a._io.run = run  # type: ignore[method-assign]

            async def receive() -> None:
                with receiver:
                    await ticker.__anext__()

            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(receive)
            assert len(claimed) == 1
            for _ in range(later):
                with anyio.fail_after(5):
                    await other.__anext__()
        # a's ticker closed with the claimed tick undelivered: b must get it.
        with anyio.fail_after(5):
            tick = await other.__anext__()
    count, next_ms = claimed[0]
    assert tick.at == ms_to_datetime(next_ms - count * interval_ms)
    assert tick.count >= count
    if later:
        assert tick.count == count


async def test_a_receiver_cancelled_before_the_tick_is_due_claims_nothing(
    client: Any, unique: str
) -> None:
    """A receiver that leaves before its tick is due leaves that tick in Redis: its ticker
    makes no claim for nobody, and the other node's receiver gets every tick."""
    interval = 0.5
    claims: list[str] = []
    async with (
        node(client, unique) as a,
        node(client, unique) as b,
        b.open_ticker("t", interval) as other,
    ):
        with anyio.fail_after(5):
            await other.__anext__()  # the next tick is now about one interval away
        async with a.open_ticker("t", interval) as ticker:
            original = a._io.run

            async def run(name: str, *args: Any) -> Any:
                if name == "tick" and args[0] == "claim":
                    claims.append(name)
                return await original(name, *args)

            a._io.run = run  # type: ignore[method-assign]
            with anyio.move_on_after(0.05):
                await ticker.__anext__()
            with anyio.fail_after(5):
                for _ in range(2):
                    await other.__anext__()
    assert claims == []


class _StopsSlowly:
    """A handler whose ``stop`` takes a while: closing its node takes as long."""

    def __init__(self) -> None:
        self.running = anyio.Event()

    async def start(self, job: pool.Job) -> None:
        self.running.set()

    async def stop(self, key: str) -> None:
        await anyio.sleep(5 * INTERVAL)


class _KeepsOneJob:
    """Plans the start of job "a" on every tick (satisfied while it runs)."""

    name = "keeps-one-job"

    async def plan(self) -> pool.JobPlan:
        return pool.JobPlan(start=[("a", b"")])


async def test_a_schedule_ticking_while_its_node_closes_logs_no_error(
    client: Any, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Leaving the node's block ends its schedules: ticks that come while the node is closing
    (its jobs being handed over) are not applied, and that is not a producer failure."""
    handler = _StopsSlowly()
    with caplog.at_level("WARNING", logger="pulse_trio.pool"):
        async with node(client, unique) as n:
            await n.add_worker(handler)
            await n.schedule(_KeepsOneJob(), INTERVAL)
            with anyio.fail_after(5):
                await handler.running.wait()
    failures = [r for r in caplog.records if "producer" in r.getMessage()]
    assert failures == [], [r.getMessage() for r in failures]
