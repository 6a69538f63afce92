"""One test per guarantee of SPEC section 5 (10, the ticker, is in test_ticker.py).

Real Redis, both backends; nodes in child processes are killed with SIGKILL or paused with
SIGSTOP where the guarantee is about failures.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import pulse_trio
from pulse_trio import pool
from pulse_trio.pool import _routing
from pulse_trio.pool._acks import MAX_START_ATTEMPTS
from pulse_trio.testing import FaultProxy

from .._util import wait_until, wait_until_async
from ._helpers import TTL, Recorder, node, remote_node

pytestmark = pytest.mark.anyio


async def owners(n: pool.Node) -> dict[str, str | None]:
    return {info.key: info.worker_id for info in await n.jobs()}


async def test_g1_concurrent_dispatches_of_one_key_from_many_nodes_admit_one(
    client: Any, unique: str
) -> None:
    handler = Recorder()
    outcomes: list[str] = []
    async with (
        node(client, unique) as a,
        node(client, unique) as b,
        node(client, unique, client_only=True) as c,
    ):
        await a.add_worker(handler)

        async def dispatch(n: pool.Node) -> None:
            try:
                await n.dispatch_job("singleton", b"x")
                outcomes.append("ok")
            except pool.JobExistsError:
                outcomes.append("exists")

        async with anyio.create_task_group() as tg:
            for i in range(30):
                tg.start_soon(dispatch, (a, b, c)[i % 3])
    assert sorted(outcomes) == ["exists"] * 29 + ["ok"]
    assert handler.starts["singleton"] == 1


async def test_g2_defect_15_routing_same_owner_everywhere_and_minimal_moves(
    client: Any, unique: str
) -> None:
    handler = Recorder()
    keys = [f"k{i}" for i in range(40)]
    async with node(client, unique) as a, node(client, unique) as b:
        w1 = await a.add_worker(handler)
        w2 = await b.add_worker(handler)
        w3 = await b.add_worker(handler)
        for i, key in enumerate(keys):
            await (a, b)[i % 2].dispatch_job(key, b"")
        members = [w1.id, w2.id, w3.id]
        placed = await owners(a)
        assert placed == {k: _routing.owner(k, members) for k in keys}
        assert {w for w in placed.values()} == set(members)  # every worker got some

        # Adding a worker moves keys only to it, and only those routing gives it.
        w4 = await a.add_worker(handler)
        members.append(w4.id)
        expected = {k: _routing.owner(k, members) for k in keys}
        await wait_until_async(lambda: _same(a, expected), what="rebalance after add")
        for key in keys:
            if placed[key] != expected[key]:
                assert expected[key] == w4.id
                assert handler.stops[key] == 1
            else:
                assert handler.stops[key] == 0, (key, a.statistics(), b.statistics())
        placed = expected

        # Removing w1 (the oldest) moves only w1's keys.
        await a.remove_worker(w1)
        members.remove(w1.id)
        expected = {k: _routing.owner(k, members) for k in keys}
        await wait_until_async(lambda: _same(a, expected), what="rebalance after remove")
        for key in keys:
            if placed[key] != w1.id:
                assert expected[key] == placed[key]
        await wait_until(lambda: set(handler.running) == set(keys))
        assert handler.overlaps == []


async def _same(n: pool.Node, expected: dict[str, str | None]) -> bool:
    infos = await n.jobs()
    return {i.key: i.worker_id for i in infos} == expected and all(
        i.state == "running" for i in infos
    )


async def test_g3_a_moved_job_stops_on_its_old_worker_before_it_starts_on_the_new(
    client: Any, unique: str
) -> None:
    old, new = Recorder(), Recorder()
    async with node(client, unique) as a, node(client, unique) as b:
        await a.add_worker(old)
        for i in range(30):
            await a.dispatch_job(f"k{i}", b"")
        await b.add_worker(new)
        await wait_until(lambda: len(new.running) > 0 and len(old.running) + len(new.running) == 30)
        for key in new.running:
            stopped = [t for t, what, k in old.log if what == "stop" and k == key]
            started = [t for t, what, k in new.log if what == "start" and k == key]
            assert stopped
            assert started
            assert stopped[0] <= started[0]
            assert new.running[key].requeued


async def test_g3_a_node_cut_off_from_redis_stops_its_jobs_before_others_restart_them(
    client: Any, server_url: str, unique: str
) -> None:
    """Self-fencing: node A loses Redis (a partition: every connection silent); it stops its
    own jobs before node B, which reaps A on the Redis clock, restarts them."""
    fenced, survivor = Recorder(), Recorder()
    port = int(server_url.rsplit(":", 1)[1])
    async with (
        FaultProxy(port) as proxy,
        pulse_trio.connect(proxy.url) as cut_client,
        node(client, unique, worker_ttl=TTL) as b,
        node(cut_client, unique, worker_ttl=TTL) as a,
    ):
        await a.add_worker(fenced)
        for i in range(10):
            await a.dispatch_job(f"k{i}", b"")
        assert len(fenced.running) == 10
        await b.add_worker(survivor)
        await wait_until(lambda: len(fenced.running) + len(survivor.running) == 10)
        moved_before = set(survivor.running)
        proxy.freeze_all()
        cut_at = anyio.current_time()
        await wait_until(lambda: len(survivor.running) == 10, within=TTL * 4, what="failover")
        assert not fenced.running
        for key in set(survivor.running) - moved_before:
            stop_at = next(t for t, w, k in fenced.log if w == "stop" and k == key)
            start_at = [t for t, w, k in survivor.log if w == "start" and k == key][-1]
            assert cut_at < stop_at < start_at
        assert a.statistics().fenced >= 1


async def test_g4_a_killed_node_process_jobs_restart_on_live_workers(
    client: Any, server_url: str, unique: str
) -> None:
    local = Recorder()
    keys = [f"k{i}" for i in range(20)]
    async with remote_node(server_url, unique, workers=2) as remote, node(client, unique) as n:
        await n.add_worker(local)
        for key in keys:
            await n.dispatch_job(key, b"")
        await wait_until(lambda: len(remote.running) + len(local.running) == 20)
        on_remote = set(remote.running)
        assert on_remote
        remote.kill()
        killed_at = anyio.current_time()
        await wait_until(lambda: set(local.running) == set(keys), within=TTL * 1.5 + 1.5)
        elapsed = anyio.current_time() - killed_at
        for key in on_remote:
            assert local.running[key].requeued
        assert local.overlaps == []
        print(f"failover after SIGKILL: {elapsed:.2f}s with worker_ttl={TTL}")


async def test_g4_defect_03_a_paused_node_comes_back_and_registers_again(
    client: Any, server_url: str, unique: str
) -> None:
    local = Recorder()
    keys = [f"k{i}" for i in range(20)]
    async with remote_node(server_url, unique) as remote, node(client, unique) as n:
        await n.add_worker(local)
        for key in keys:
            await n.dispatch_job(key, b"")
        await wait_until(lambda: len(remote.running) + len(local.running) == 20)
        assert remote.running
        remote.pause()
        await wait_until(lambda: set(local.running) == set(keys), within=TTL * 3)
        await wait_until_async(
            lambda: _has_node(n, remote.node_id, False), what="the paused node reaped"
        )
        remote.resume()
        # It fences (stops what it thought it ran), re-registers and takes its share again.
        await wait_until_async(
            lambda: _has_node(n, remote.node_id, True), within=TTL * 4, what="re-registered"
        )
        await wait_until(lambda: len(remote.running) > 0, within=TTL * 4, what="jobs again")
        await wait_until(lambda: len(remote.running) + len(local.running) == 20, within=TTL * 4)


async def _has_node(n: pool.Node, node_id: str, present: bool) -> bool:
    return any(w.node_id == node_id for w in await n.workers()) == present


async def test_g5_defect_02_a_redelivered_start_does_not_start_the_job_twice(
    client: Any, unique: str
) -> None:
    handler = Recorder()
    async with node(client, unique) as n:
        await n.add_worker(handler)
        await n.dispatch_job("k", b"p")
        stream = f"pulse-trio:pool:{{{unique}}}:node:{n.id}"
        info = await n.job("k")
        assert info is not None
        record = await client.hget(f"pulse-trio:pool:{{{unique}}}:jobs", "k")
        import json

        token = json.loads(record)["g"]
        fields = {
            "t": "s", "k": "k", "w": info.worker_id, "g": token, "p": b"p",
            "c": "0", "q": "0", "o": n.id,
        }  # fmt: skip
        for _ in range(3):
            await client.xadd(stream, fields)
        await n.dispatch_job("after", b"")  # the stream was read past the copies
        assert handler.starts["k"] == 1
        assert (await n.job("k")).state == "running"  # type: ignore[union-attr]


async def test_g6_defect_05_a_timed_out_dispatch_is_withdrawn_and_never_starts(
    client: Any, unique: str
) -> None:
    handler = Recorder()
    async with node(client, unique, ack_grace_period=0.3) as n:
        with pytest.raises(pool.DispatchTimeoutError):
            await n.dispatch_job("k", b"")  # no worker at all
        assert await n.job_keys() == []
        await n.add_worker(handler)
        await n.dispatch_job("other", b"")
        assert handler.starts["k"] == 0
        # A worker that took the job but starts slowly: the dispatch waits and succeeds.
        handler.start_delay = 0.8
        await n.dispatch_job("slow", b"")
        assert "slow" in handler.running


async def test_g6_a_dispatch_waiting_for_a_worker_succeeds_when_one_comes(
    client: Any, unique: str
) -> None:
    handler = Recorder()
    async with node(client, unique) as n, anyio.create_task_group() as tg:
        tg.start_soon(n.dispatch_job, "k", b"")
        await wait_until_async(lambda: _keys_are(n, ["k"]))
        await n.add_worker(handler)
        await wait_until(lambda: "k" in handler.running)


async def _keys_are(n: pool.Node, keys: list[str]) -> bool:
    return await n.job_keys() == keys


async def test_g7_defect_13_max_queued_jobs_refuses_and_trims_nothing(
    client: Any, unique: str
) -> None:
    handler = Recorder()
    async with node(client, unique, max_queued_jobs=3) as n, anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(n.dispatch_job, f"q{i}", b"")
        await wait_until_async(lambda: _keys_are(n, ["q0", "q1", "q2"]))
        with pytest.raises(pool.QueueFullError):
            await n.dispatch_job("q3", b"")
        await n.add_worker(handler)
        await wait_until(lambda: set(handler.running) == {"q0", "q1", "q2"})
        await n.dispatch_job("q3", b"")  # room again once they run


async def test_g8_defect_07_a_start_that_keeps_failing_on_requeue_is_retried_then_failed(
    client: Any, unique: str
) -> None:
    good, bad = Recorder(), Recorder(fail_start=lambda job: True)
    async with node(client, unique) as n:
        w = await n.add_worker(good)
        await n.dispatch_job("poison", b"")
        await n.add_worker(bad)
        await n.remove_worker(w)  # the job moves to the worker whose starts fail
        await wait_until_async(lambda: _state_is(n, "poison", "failed"), within=10)
        info = await n.job("poison")
        assert info is not None
        assert info.failures == MAX_START_ATTEMPTS
        assert "cannot start poison" in info.error
        assert bad.starts["poison"] == MAX_START_ATTEMPTS
        assert await n.job_keys() == ["poison"]
        with anyio.move_on_after(0.5):
            await wait_until(lambda: bad.starts["poison"] > MAX_START_ATTEMPTS)
        assert bad.starts["poison"] == MAX_START_ATTEMPTS  # no more attempts
        with pytest.raises(pool.JobExistsError):
            await n.dispatch_job("poison", b"")
        await n.stop_job("poison")  # a failed job is removed by stop_job
        assert await n.job_keys() == []


async def _state_is(n: pool.Node, key: str, state: str) -> bool:
    info = await n.job(key)
    return info is not None and info.state == state


async def test_g9_close_hands_jobs_to_other_nodes(client: Any, unique: str) -> None:
    leaving, staying = Recorder(), Recorder()
    keys = [f"k{i}" for i in range(20)]
    async with node(client, unique) as b:
        await b.add_worker(staying)
        async with node(client, unique) as a:
            await a.add_worker(leaving)
            for key in keys:
                await a.dispatch_job(key, b"")
            await wait_until(lambda: len(leaving.running) > 0)
            handed = set(leaving.running)
        assert leaving.running == {}
        assert all(leaving.stops[k] == 1 for k in handed)
        await wait_until(lambda: set(staying.running) == set(keys))
        assert all(staying.running[k].requeued for k in handed)


async def test_g9_defect_11_shutdown_stops_every_job_on_every_node_then_removes_the_pool(
    client: Any, unique: str
) -> None:
    h1, h2 = Recorder(), Recorder()
    async with (
        node(client, unique) as a,
        node(client, unique) as b,
        node(client, unique, client_only=True) as c,
    ):
        await a.add_worker(h1)
        await b.add_worker(h2)
        for i in range(10):
            await c.dispatch_job(f"k{i}", b"")
        assert len(h1.running) + len(h2.running) == 10
        await b.shutdown()
        assert h1.running == {}
        assert h2.running == {}
        assert sum(h1.stops.values()) + sum(h2.stops.values()) == 10
        left = [k async for k in client.scan_iter(match=f"pulse-trio:pool:{{{unique}}}:*")]
        assert [k.decode() for k in left] == [f"pulse-trio:pool:{{{unique}}}:shutdown"]
        for n in (a, b, c):
            with pytest.raises(pool.PoolShuttingDownError):
                await n.dispatch_job("late", b"")
    with pytest.raises(pool.PoolShuttingDownError):
        async with node(client, unique):
            pass


async def test_g9_close_is_bounded_by_worker_shutdown_ttl(client: Any, unique: str) -> None:
    class StuckStop(Recorder):
        async def stop(self, key: str) -> None:
            await super().stop(key)
            await anyio.sleep_forever()

    stuck, staying = StuckStop(), Recorder()
    async with node(client, unique) as b:
        wb = await b.add_worker(staying)
        async with node(client, unique, worker_shutdown_ttl=0.5) as a:
            wa = await a.add_worker(stuck)
            key = next(
                f"k{i}" for i in range(100) if _routing.owner(f"k{i}", [wa.id, wb.id]) == wa.id
            )
            await a.dispatch_job(key, b"")
            assert key in stuck.running
            left_at = anyio.current_time()
        assert anyio.current_time() - left_at < 0.5 + 3.0  # the stuck stop did not hold it
        assert stuck.stops[key] == 1
        await wait_until(lambda: key in staying.running, what="handed over")


async def test_g9_a_failed_background_task_does_not_hold_the_close(
    client: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug in a background task (simulated: the node stream's reader raises) ends the node's
    # task groups, its workers' included: closing must not wait worker_shutdown_ttl for key
    # queues that no task drains any more.
    from pulse_trio.pool import _intake, _protocol

    handler = Recorder()
    decode = _protocol.decode_message

    def failing(entry_id: str, raw: Any) -> Any:
        message = decode(entry_id, raw)
        if message.type == "n":
            raise RuntimeError("a bug in the intake")
        return message

    monkeypatch.setattr(_intake, "decode_message", failing)
    left_at = 0.0

    async def run() -> None:
        nonlocal left_at
        async with node(client, unique, worker_shutdown_ttl=30.0) as n:
            await n.add_worker(handler)
            await n.dispatch_job("j", b"")
            assert "j" in handler.running
            left_at = anyio.current_time()
            await n.notify_worker("j", b"note")  # the intake fails on it
            await anyio.sleep_forever()

    with pytest.raises(BaseExceptionGroup) as caught:
        await run()
    assert caught.group_contains(RuntimeError, match="a bug in the intake")
    assert anyio.current_time() - left_at < 5.0  # not worker_shutdown_ttl (30 s)
