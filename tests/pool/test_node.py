"""The pool node: dispatch, stop, notify, listing, errors (real Redis, both backends)."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

import pulse_trio
from pulse_trio import pool
from pulse_trio.testing import EmbeddedServer

from .._util import wait_until, wait_until_async
from ._helpers import Recorder, node

pytestmark = pytest.mark.anyio


async def test_dispatch_runs_on_a_worker_and_stop_stops_it(client: Any, unique: str) -> None:
    handler = Recorder()
    async with node(client, unique) as n:
        worker = await n.add_worker(handler)
        await n.dispatch_job("job-1", b"payload")
        assert handler.starts["job-1"] == 1
        job = handler.running["job-1"]
        assert job.payload == b"payload"
        assert job.worker_id == worker.id
        assert job.node_id == n.id
        assert not job.requeued
        assert await n.job_keys() == ["job-1"]
        assert await n.job_payload("job-1") == b"payload"
        info = await n.job("job-1")
        assert info is not None
        assert (info.state, info.worker_id) == ("running", worker.id)
        await n.notify_worker("job-1", b"hello")
        assert handler.notes == [("job-1", b"hello")]
        await n.stop_job("job-1")
        assert handler.stops["job-1"] == 1
        assert "job-1" not in handler.running
        assert await n.job_keys() == []
        assert await n.job_payload("job-1") is None
        with pytest.raises(pool.JobNotFoundError):
            await n.stop_job("job-1")


async def test_bad_input_raises_before_any_io(client: Any, unique: str) -> None:
    with pytest.raises(pulse_trio.InvalidNameError):
        pool.open_node(client, "bad name")
    with pytest.raises(ValueError, match="worker_ttl"):
        pool.open_node(client, unique, worker_ttl=0)
    with pytest.raises(ValueError, match="worker_shutdown_ttl"):
        pool.open_node(client, unique, worker_shutdown_ttl=-1)
    with pytest.raises(ValueError, match="ack_grace_period"):
        pool.open_node(client, unique, ack_grace_period=float("nan"))
    with pytest.raises(ValueError, match="max_queued_jobs"):
        pool.open_node(client, unique, max_queued_jobs=0)
    with pytest.raises(TypeError, match="max_queued_jobs"):
        pool.open_node(client, unique, max_queued_jobs=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="client_only"):
        pool.open_node(client, unique, client_only="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"pulse_trio\.Client"):
        pool.open_node(object(), unique)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no public constructor"):
        pool.Node(client, unique)  # type: ignore[call-arg]
    n = pool.open_node(client, unique)
    # Bad keys and payloads are refused even on a node that is not open: no I/O happened.
    with pytest.raises(ValueError, match="job key"):
        await n.dispatch_job("", b"")
    with pytest.raises(ValueError, match="job key"):
        await n.dispatch_job("a\0b", b"")
    with pytest.raises(TypeError, match="payload must be bytes"):
        await n.dispatch_job("k", "text")  # type: ignore[arg-type]
    with pytest.raises(pool.PoolClosedError):
        await n.dispatch_job("k", b"")
    assert not await client.keys("*")


async def test_defect_19_handler_errors_reach_the_caller(client: Any, unique: str) -> None:
    handler = Recorder(fail_start=lambda job: job.key.startswith("bad"), fail_stop=True)
    async with node(client, unique) as n:
        await n.add_worker(handler)
        with pytest.raises(pool.JobStartError, match="cannot start bad-1") as caught:
            await n.dispatch_job("bad-1", b"")
        assert caught.value.handler_message == "cannot start bad-1"
        assert await n.job_keys() == []  # a fresh job whose start failed is gone
        await n.dispatch_job("good", b"")
        with pytest.raises(pool.JobStopError, match="cannot stop good"):
            await n.stop_job("good")
        assert await n.job_keys() == []
        with pytest.raises(pool.JobNotFoundError):
            await n.notify_worker("good", b"")


async def test_notification_without_handler_method_is_reported(client: Any, unique: str) -> None:
    class Plain:
        async def start(self, job: pool.Job) -> None:
            pass

        async def stop(self, key: str) -> None:
            pass

    async with node(client, unique) as n:
        await n.add_worker(Plain())
        await n.dispatch_job("k", b"")
        with pytest.raises(pool.NotificationError, match="handle_notification"):
            await n.notify_worker("k", b"")
        assert await n.job_keys() == ["k"]


async def test_client_only_node_dispatches_stops_notifies_lists_and_closes(
    client: Any, unique: str
) -> None:
    handler = Recorder()
    async with node(client, unique) as w:
        worker = await w.add_worker(handler)
        async with node(client, unique, client_only=True) as c:
            with pytest.raises(pool.PoolError, match="client-only"):
                await c.add_worker(handler)
            await c.dispatch_job("k", b"p")
            assert await c.job_keys() == ["k"]
            assert await c.job_payload("k") == b"p"
            assert [x.id for x in await c.workers()] == [worker.id]
            await c.notify_worker("k", b"n")
            await c.stop_job("k")
        assert c.closed
        assert handler.notes == [("k", b"n")]
        assert handler.stops["k"] == 1
        assert await w.workers() == [pool.WorkerInfo(worker.id, w.id)]


async def test_operations_after_close_raise_pool_closed(client: Any, unique: str) -> None:
    async with node(client, unique) as n:
        pass
    with pytest.raises(pool.PoolClosedError):
        await n.dispatch_job("k", b"")
    with pytest.raises(pulse_trio.ClosedError):
        await n.job_keys()
    with pytest.raises(RuntimeError, match="only once"):
        async with n:
            pass
    # The node left: nothing of it stays in Redis but the (empty) membership counter.
    keys = sorted(k.decode() for k in await client.keys("*"))
    assert all(not k.endswith(f"node:{n.id}") for k in keys)


async def test_job_tasks_start_ack_stop_cancels_and_failure_retries(
    client: Any, unique: str
) -> None:
    events: list[str] = []
    crash = anyio.Event()

    async def job_task(job: pool.Job, *, task_status: Any) -> None:
        if job.key == "refuse":
            raise ValueError("refused before start")
        events.append(f"start {job.key} {int(job.requeued)}")
        task_status.started()
        try:
            if job.key == "crash" and not job.requeued:
                await crash.wait()
                raise RuntimeError("boom")
            await anyio.sleep_forever()
        finally:
            events.append(f"end {job.key}")

    async with node(client, unique) as n:
        await n.add_worker(pool.job_tasks(job_task))
        await n.dispatch_job("a", b"")
        assert events == ["start a 0"]
        with pytest.raises(pool.JobStartError, match="refused before start"):
            await n.dispatch_job("refuse", b"")
        await n.stop_job("a")
        assert events == ["start a 0", "end a"]
        await n.dispatch_job("crash", b"")
        crash.set()
        # A failure after the start is logged, and the job is retried (requeued).
        await wait_until(lambda: "start crash 1" in events, what="retry after the crash")
        await wait_until_async(lambda: _running(n, "crash"), what="running again")
    assert events[-1] == "end crash"


async def _running(n: pool.Node, key: str) -> bool:
    info = await n.job(key)
    return info is not None and info.state == "running"


async def test_a_job_task_that_returns_is_finished_and_removed(client: Any, unique: str) -> None:
    async def once(job: pool.Job, *, task_status: Any) -> None:
        task_status.started()

    async with node(client, unique) as n:
        await n.add_worker(pool.job_tasks(once))
        await n.dispatch_job("k", b"")
        await wait_until_async(lambda: _no_keys(n), what="finished job removed")


async def _no_keys(n: pool.Node) -> bool:
    return await n.job_keys() == []


async def test_defect_14_malformed_entries_are_logged_and_skipped(
    client: Any, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Recorder()
    async with node(client, unique) as n:
        await n.add_worker(handler)
        stream = f"pulse-trio:pool:{{{unique}}}:node:{n.id}"
        await client.xadd(stream, {"t": "zz"})
        await client.xadd(stream, {"t": "s", "k": "no-token"})
        await client.xadd(stream, {"hello": "world"})
        await n.dispatch_job("k", b"")
        assert "k" in handler.running
        # The job may start locally, before the node's stream reader reached the entries.
        await wait_until(lambda: n.statistics().malformed == 3, what="malformed entries skipped")
    assert "skipped" in caplog.text


async def test_redis_restart_loses_no_job(own_server: EmbeddedServer, unique: str) -> None:
    handler = Recorder()
    async with pulse_trio.connect(own_server.url) as c, node(c, unique) as n:
        await n.add_worker(handler)
        for i in range(5):
            await n.dispatch_job(f"k{i}", b"")
        await own_server.restart()
        await n.dispatch_job("after", b"")
        assert set(handler.running) >= {f"k{i}" for i in range(5)} | {"after"}
        assert sorted(await n.job_keys()) == sorted([*(f"k{i}" for i in range(5)), "after"])


async def test_redis_away_dispatch_raises_unavailable_within_its_timeout(
    own_server: EmbeddedServer, unique: str
) -> None:
    handler = Recorder()
    async with (
        pulse_trio.connect(own_server.url) as c,
        node(c, unique, ack_grace_period=1.0, worker_ttl=5.0) as n,
    ):
        await n.add_worker(handler)
        await n.dispatch_job("k", b"")
        await own_server.kill()
        with anyio.fail_after(5), pytest.raises(pulse_trio.RedisUnavailableError):
            await n.dispatch_job("j", b"")
        assert "k" in handler.running  # running jobs keep running until fencing


async def test_a_cancelled_dispatch_is_withdrawn_unless_taken(client: Any, unique: str) -> None:
    handler = Recorder()
    async with node(client, unique) as n:
        with anyio.move_on_after(0.3):
            await n.dispatch_job("nobody", b"")  # no worker: waits, then is cancelled
        assert await n.job_keys() == []  # withdrawn
        await n.add_worker(handler)
        handler.start_delay = 0.5
        with anyio.move_on_after(0.1):
            await n.dispatch_job("slow", b"")  # taken by the worker, then cancelled
        await wait_until(lambda: "slow" in handler.running, what="the taken job started")
        assert handler.starts == {"slow": 1}
        assert await n.job_keys() == ["slow"]


async def test_redis_away_longer_than_the_ttl_fences_then_recovers_every_job(
    own_server: EmbeddedServer, unique: str
) -> None:
    handler = Recorder()
    keys = {f"k{i}" for i in range(5)}
    async with pulse_trio.connect(own_server.url) as c, node(c, unique, worker_ttl=1.0) as n:
        await n.add_worker(handler)
        for key in keys:
            await n.dispatch_job(key, b"")
        await own_server.restart(down_for=1.5)
        # The node could not renew its liveness: it stopped its jobs (self-fencing) ...
        await wait_until(lambda: all(handler.stops[key] == 1 for key in keys), what="fenced")
        assert n.statistics().fenced == 1
        # ... and once Redis is back it registers again and every job runs again.
        await wait_until(lambda: set(handler.running) == keys, within=10, what="recovered")
        assert not n.statistics().is_fenced
        assert all(handler.running[key].requeued for key in keys)


async def test_node_stream_reads_stay_below_the_clients_read_timeout(
    server_url: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pulse_trio")
    handler = Recorder()
    async with (
        pulse_trio.connect(server_url, command_timeout=0.3) as c,
        node(c, unique) as n,
    ):
        await n.add_worker(handler)
        await anyio.sleep(0.8)  # quiet for longer than the client's read timeout
        await n.dispatch_job("late", b"")
    assert "late" in handler.starts
    # A node stream read cut by the client's read timeout is retried with a warning. (Other
    # warnings are not this test's: with a 0.3 s command_timeout, a loaded machine may also
    # delay a heartbeat past worker_ttl, which the liveness tests cover.)
    reads = [r for r in caplog.records if "node stream" in r.getMessage()]
    assert not [r for r in reads if r.levelno >= logging.WARNING], caplog.text


async def test_stop_during_a_slow_start_runs_after_it(client: Any, unique: str) -> None:
    handler = Recorder()
    handler.start_delay = 0.3
    outcomes: list[str] = []
    async with node(client, unique) as n, node(client, unique, client_only=True) as c:
        await n.add_worker(handler)

        async def dispatch(via: pool.Node, key: str) -> None:
            await via.dispatch_job(key, b"")
            outcomes.append(key)

        async with anyio.create_task_group() as tg:
            tg.start_soon(dispatch, n, "local")  # same-node path
            tg.start_soon(dispatch, c, "remote")  # through the worker node's stream
            await wait_until(lambda: handler.starts["local"] + handler.starts["remote"] == 2)
            await n.stop_job("local")
            await c.stop_job("remote")
        assert sorted(outcomes) == ["local", "remote"]  # both had started
        assert handler.stops == {"local": 1, "remote": 1}
        assert handler.running == {}
        assert await n.job_keys() == []


async def test_a_stale_batch_admits_none_of_its_jobs(client: Any, unique: str) -> None:
    """The dispatch script checks every target before it writes: a batch whose later item
    routes to a worker that is not where the caller thinks leaves the earlier items
    unadmitted (routed again, they must not be found 'exists')."""
    async with node(client, unique) as n:
        worker = await n.add_worker(Recorder())
        epoch = n._membership.epoch
        first: list[str | bytes] = ["early", b"", "token-1", worker.id, n.id, "0"]
        wrong: list[str | bytes] = ["late", b"", "token-2", worker.id, "elsewhere", "0"]
        reply = await n._io.run("dispatch", n.id, epoch, "100", "", *first, *wrong)
        assert reply[0] == b"stale"
        assert await n.job_keys() == []
        await n.dispatch_job("early", b"")  # routed again: admitted, not 'exists'
        assert await n.job_keys() == ["early"]


async def test_starts_of_other_keys_never_wait_for_a_blocked_start(
    client: Any, unique: str
) -> None:
    """Reused drainer tasks: keys whose start blocks hold no other key back."""
    release = anyio.Event()
    started: list[str] = []

    class Handler:
        async def start(self, job: pool.Job) -> None:
            if job.key.startswith("slow"):
                await release.wait()
            started.append(job.key)

        async def stop(self, key: str) -> None:
            pass

    async with node(client, unique) as n:
        await n.add_worker(Handler())
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(n.dispatch_job, f"slow-{i}", b"")
            with anyio.fail_after(10):
                async with anyio.create_task_group() as fast:
                    for i in range(40):
                        fast.start_soon(n.dispatch_job, f"fast-{i}", b"")
            assert sorted(started) == sorted(f"fast-{i}" for i in range(40))
            release.set()
        assert len(started) == 43


async def test_a_start_answered_before_its_admission_was_recorded_is_a_success(
    client: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's answer comes on the dispatching node's stream, read by the node's intake
    # task; the admission's reply is handled by the admission task. Delay the admission after
    # its reply (as a busy event loop may): the answer is there first, and the dispatch must
    # still succeed (it raised "no answer from Redis" when both raced).
    from pulse_trio.pool._redis import PoolRedis

    run = PoolRedis.run

    async def late_admission(self: PoolRedis, name: str, *args: Any) -> Any:
        reply = await run(self, name, *args)
        if name == "dispatch":
            await anyio.sleep(0.3)
        return reply

    handler = Recorder()
    async with node(client, unique) as worker_node, node(client, unique, client_only=True) as c:
        await worker_node.add_worker(handler)
        monkeypatch.setattr(PoolRedis, "run", late_admission)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                # The first caller admits its job itself; the second one's batch goes to the
                # node's admission task, which the answer overtakes.
                for key in ("first", "raced"):
                    tg.start_soon(c.dispatch_job, key, b"p")
                    await anyio.sleep(0.05)
        assert set(handler.running) == {"first", "raced"}
