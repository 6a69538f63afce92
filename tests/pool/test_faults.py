"""Faults at awkward moments: a script that ran in Redis but whose reply was lost (the
connection dropped after Redis executed it), and a node that closes while a batch of starts
is being taken.

The lost reply is injected by wrapping the node's ``PoolRedis.run``: the script runs for real,
then the call raises ``RedisUnavailableError`` as a dropped connection would, and the node's
retry runs it a second time.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import pulse_trio
from pulse_trio import pool
from pulse_trio.pool import _routing
from pulse_trio.pool._protocol import node_stream_key

from .._util import wait_until, wait_until_async
from ._helpers import Recorder, node

pytestmark = pytest.mark.anyio


def lose_reply_once(n: pool.Node, script: str) -> list[str]:
    """Make the first call of ``script`` on ``n`` run in Redis and then fail as if its reply
    had been lost. Returns a list that records each call of ``script``."""
    original = n._io.run
    calls: list[str] = []

    async def run(name: str, *args: Any) -> Any:
        reply = await original(name, *args)
        if name == script:
            calls.append(name)
            if len(calls) == 1:
                raise pulse_trio.RedisUnavailableError(f"{script}: reply lost (injected)")
        return reply

    n._io.run = run  # type: ignore[method-assign]
    return calls


async def test_a_take_whose_reply_was_lost_still_starts_the_job(client: Any, unique: str) -> None:
    """The retried ``pool_take`` answers ``dup`` (the first call took the job): the worker
    must start it all the same, not leave it taken by nobody with its dispatcher waiting
    forever."""
    handler = Recorder()
    async with (
        node(client, unique, ack_grace_period=0.5) as a,
        node(client, unique) as b,
    ):
        await b.add_worker(handler)
        await wait_until(lambda: len(a._membership.workers) == 1, what="a sees the worker")
        calls = lose_reply_once(b, "take")
        with anyio.fail_after(5):
            await a.dispatch_job("k", b"x")
        assert len(calls) == 2
        assert handler.starts["k"] == 1
        assert "k" in handler.running
        info = await a.job("k")
        assert info is not None
        assert info.state == "running"


async def test_an_ack_whose_reply_was_lost_does_not_fail_a_started_dispatch(
    client: Any, unique: str
) -> None:
    """A local dispatch is answered in the reply of the node's own ``pool_ack``; when that
    reply is lost the retried ack has nothing left to answer. The dispatcher's withdrawal must
    then find that the job runs (guarantee 6), not report it failed."""
    handler = Recorder()
    async with node(client, unique, ack_grace_period=0.5) as n:
        await n.add_worker(handler)
        calls = lose_reply_once(n, "ack")
        with anyio.fail_after(5):
            await n.dispatch_job("k", b"x")
        assert len(calls) == 2
        assert handler.starts["k"] == 1
        info = await n.job("k")
        assert info is not None
        assert info.state == "running"


async def test_a_dispatch_whose_answer_was_dropped_with_its_reaped_node_does_not_fail(
    client: Any, unique: str
) -> None:
    """The worker's ack answers a dispatcher on another node through that node's stream; if
    that node was reaped just then (a pause past ``worker_ttl``), the answer is dropped. The
    withdrawal after ``ack_grace_period`` must find the job running, not report it failed."""
    handler = Recorder()
    async with (
        node(client, unique, ack_grace_period=0.5, client_only=True) as a,
        node(client, unique) as b,
    ):
        await b.add_worker(handler)
        await wait_until(lambda: len(a._membership.workers) == 1, what="a sees the worker")
        original = b._io.run

        async def run(name: str, *args: Any) -> Any:
            if name == "ack":
                # a is declared dead just before the ack answers it (its stream goes too).
                await client.zrem(f"pulse-trio:pool:{{{unique}}}:nodes", [a.id])
            return await original(name, *args)

        b._io.run = run  # type: ignore[method-assign]
        with anyio.fail_after(5):
            await a.dispatch_job("k", b"x")
        assert handler.starts["k"] == 1


async def test_a_node_closing_while_it_takes_starts_never_leaves_a_job_started_unstopped(
    client: Any, unique: str
) -> None:
    """Starts taken while the node closes arrive after it stopped its jobs: they must not
    reach the handler (a job started and never stopped would run on as a zombie while the
    pool restarts it elsewhere, reference §12 #4)."""
    handler = Recorder()
    taking = anyio.Event()
    took = anyio.Event()
    async with node(client, unique, client_only=True, ack_grace_period=1.0) as a:
        outcome: list[str] = []

        async def dispatch() -> None:
            try:
                await a.dispatch_job("k", b"x")
                outcome.append("started")
            except pool.PoolError as exc:
                outcome.append(type(exc).__name__)

        async with anyio.create_task_group() as tg:
            async with node(client, unique) as b:
                original = b._io.run

                async def run(name: str, *args: Any) -> Any:
                    if name == "take":
                        taking.set()
                        await wait_until(lambda: b._closing, what="b closing")
                        try:
                            return await original(name, *args)
                        finally:
                            took.set()
                    if name == "remove" and b._closing:
                        with anyio.move_on_after(2):
                            await took.wait()
                        await anyio.sleep(0.05)  # let the taken starts run, if they would
                    return await original(name, *args)

                b._io.run = run  # type: ignore[method-assign]
                await b.add_worker(handler)
                await wait_until(lambda: len(a._membership.workers) == 1, what="a sees it")
                tg.start_soon(dispatch)
                with anyio.fail_after(5):
                    await taking.wait()
            assert took.is_set()
        assert handler.starts["k"] == handler.stops["k"]
        assert handler.running == {}
        assert outcome in (["DispatchTimeoutError"], ["started"])


async def test_concurrent_stops_of_one_job_both_return_once_it_stopped(
    client: Any, unique: str
) -> None:
    """A second ``stop_job`` arriving while the owner is stopping the job (``busy``) waits for
    that stop (as pool_stop.lua promises) and returns: the job it asked to stop is stopped. It
    must not report ``JobNotFoundError`` for a job that existed when it was called."""
    handler = Recorder()
    release = anyio.Event()
    original_stop = handler.stop

    async def slow_stop(key: str) -> None:
        await release.wait()
        await original_stop(key)

    handler.stop = slow_stop  # type: ignore[method-assign]
    outcomes: list[str] = []
    async with node(client, unique) as n:
        await n.add_worker(handler)
        await n.dispatch_job("k", b"")

        async def stop() -> None:
            try:
                await n.stop_job("k")
                outcomes.append("ok")
            except pool.JobNotFoundError:
                outcomes.append("notfound")

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(stop)
                await wait_until_async(
                    lambda: _state(n, "k", "stopping"), what="first stop under way"
                )
                tg.start_soon(stop)
                await anyio.sleep(0.05)
                release.set()
    assert outcomes == ["ok", "ok"]
    assert handler.stops["k"] == 1


async def _state(n: pool.Node, key: str, state: str) -> bool:
    info = await n.job(key)
    return info is not None and info.state == state


def _entry_id(raw: Any) -> tuple[int, int]:
    ms, _, seq = (raw.decode() if isinstance(raw, bytes) else str(raw)).partition("-")
    return int(ms), int(seq or 0)


async def test_a_start_placed_while_recovery_re_registers_is_not_lost(
    client: Any, unique: str
) -> None:
    """Recovery after fencing removes the node's workers, then registers them again. Once the
    register ran in Redis, another node may place a requeued job on this node's worker
    before the node counts itself unfenced; the start it reads in that window must still be
    taken (guarantee 4), not consumed and dropped while the record stays ``pending`` on a
    live worker with nobody to place it again."""
    handler = Recorder()
    hold = anyio.Event()
    registered = anyio.Event()
    failing = [False]
    async with node(client, unique) as a, node(client, unique) as b:
        worker = await b.add_worker(handler)
        await wait_until(lambda: len(a._membership.workers) == 1, what="a sees the worker")
        await a.dispatch_job("k", b"x")
        original = b._io.run

        async def run(name: str, *args: Any) -> Any:
            if name == "heartbeat" and failing[0]:
                raise pulse_trio.RedisUnavailableError("heartbeat: unreachable (injected)")
            reply = await original(name, *args)
            if name == "register" and b._fenced and not hold.is_set():
                registered.set()
                await hold.wait()  # the reply of the register is still on its way
            return reply

        b._io.run = run  # type: ignore[method-assign]
        failing[0] = True
        with anyio.fail_after(10):
            await wait_until(lambda: b._fenced and handler.stops["k"] == 1, within=10)
            failing[0] = False
            await registered.wait()

        # a (no workers of its own) places the job on b's re-registered worker ...
        async def placed_on_b() -> bool:
            info = await a.job("k")
            return info is not None and info.state == "pending" and info.worker_id == worker.id

        await wait_until_async(placed_on_b, what="k placed on b's worker")
        # ... and b's stream reader has read that start while b still counts itself fenced.
        stream = node_stream_key(unique, b.id)
        entries = await client.xrevrange(stream, count=1)
        assert entries
        last = _entry_id(entries[0][0])
        await wait_until(lambda: _entry_id(b._cursor) >= last, what="b read the start")
        assert b._fenced
        hold.set()

        async def running() -> bool:
            info = await a.job("k")
            return info is not None and info.state == "running"

        await wait_until_async(running, what="k running again, not left pending on b")
        assert "k" in handler.running
        assert handler.starts["k"] == 2
        assert not b.statistics().is_fenced


async def _placed_by_routing(n: pool.Node, handlers: dict[str, Recorder], keys: set[str]) -> bool:
    """Every job runs, once, on the worker routing gives it, and its handler runs it."""
    infos = await n.jobs()
    owners = _routing.assign(keys, handlers)
    return (
        {i.key for i in infos} == keys
        and all(i.state == "running" and i.worker_id == owners[i.key] for i in infos)
        and all(i.key in handlers[owners[i.key] or ""].running for i in infos)
        and sum(len(h.running) for h in handlers.values()) == len(keys)
    )


async def test_a_move_whose_reply_was_lost_still_starts_the_moved_jobs(
    client: Any, unique: str
) -> None:
    """``pool_move`` assigns a moved job to a worker of the moving node and takes it at once;
    when its reply is lost, the retried call finds the jobs already moved: it must still
    have them started there, not leave them ``starting`` on a worker that never starts them."""
    old, new = Recorder(), Recorder()
    keys = {f"k{i}" for i in range(40)}
    async with node(client, unique) as n:
        first = await n.add_worker(old)
        for key in sorted(keys):
            await n.dispatch_job(key, b"x")
        calls = lose_reply_once(n, "move")
        second = await n.add_worker(new)
        handlers = {first.id: old, second.id: new}
        await wait_until_async(
            lambda: _placed_by_routing(n, handlers, keys), what="moved jobs running"
        )
        assert len(calls) >= 2
        assert new.running
        assert all(new.starts[key] == 1 for key in new.running)
        assert not old.overlaps
        assert not new.overlaps
        assert all(old.stops[key] == 1 for key in new.running)


async def test_a_move_routed_with_a_membership_that_changed_meanwhile_places_the_jobs_again(
    client: Any, unique: str
) -> None:
    """A worker joins elsewhere while a rebalance hands its jobs over: ``pool_move`` refuses
    the stale routing and releases them, and the node places them with the new membership.
    Each job ends on its owner under the final membership, never on two workers."""
    old, new, late = Recorder(), Recorder(), Recorder()
    keys = {f"k{i}" for i in range(40)}
    async with node(client, unique) as n, node(client, unique) as other:
        first = await n.add_worker(old)
        for key in sorted(keys):
            await n.dispatch_job(key, b"x")
        original = n._io.run
        joined: list[str] = []

        async def run(name: str, *args: Any) -> Any:
            if name == "move" and not joined:
                joined.append((await other.add_worker(late)).id)
            return await original(name, *args)

        n._io.run = run  # type: ignore[method-assign]
        second = await n.add_worker(new)
        await wait_until(lambda: bool(joined), what="a move was sent")
        handlers = {first.id: old, second.id: new, joined[0]: late}
        await wait_until_async(
            lambda: _placed_by_routing(n, handlers, keys), what="jobs on their final owners"
        )
        assert late.running
        assert not old.overlaps
        assert not new.overlaps
        assert not late.overlaps
        for handler in (new, late):
            for key in handler.running:
                stopped = [t for t, what, k in old.log if what == "stop" and k == key]
                started = [t for t, what, k in handler.log if what == "start" and k == key]
                assert stopped
                assert started
                assert stopped[0] <= started[0]
