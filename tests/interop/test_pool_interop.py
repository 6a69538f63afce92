"""A goa.design/pulse pool and a pulse_trio pool with the same name on the same Redis.

pulse_trio's pool protocol is its own (SPEC section 5), under its own key prefix: a Go pool
node (the Go peer's ``pool-node``, goa.design/pulse v1.6.5's pool.AddNode) and a pulse_trio
pool node sharing a pool name must not see or disturb each other's keys, streams or jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ._helpers import all_keys, go_dispatch, go_job_keys, go_pool_namespaces
from ._peer import GoProcessError, b64, unb64

pool = pytest.importorskip("pulse_trio.pool", reason="pulse_trio.pool is not built yet")

pytestmark = pytest.mark.anyio

GO_POOL_FLAGS = ("--worker-ttl", "2000", "--grace", "1000", "--block", "100")


class Recorder:
    """A job handler that records the jobs it starts and stops."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.stopped: list[str] = []

    async def start(self, job: Any) -> None:
        """Record a started job."""
        self.started.append(job)

    async def stop(self, key: str) -> None:
        """Record a stopped job key."""
        self.stopped.append(key)


async def go_state(client: Any, name: str) -> dict[str, Any]:
    """The content of the Go pool's job-related keys (not its keep-alive maps, which move)."""
    state: dict[str, Any] = {}
    for what in ("jobs", "job-payloads", "workers", "pending-jobs"):
        state[what] = await client.hgetall(f"map:{name}:{what}:content")
    entries = await client.xrange(f"pulse:stream:{name}:pool")
    state["pool-stream"] = [(e.identifier, e.field_values) for e in entries]
    return state


async def test_go_and_python_pools_of_one_name_do_not_meet(
    client: Any, go: Callable[..., Any], unique: str
) -> None:
    name = unique
    async with go("pool-node", name, *GO_POOL_FLAGS) as go_node:
        go_worker = (await go_node.call("add-worker"))["worker"]
        await go_dispatch(go_node, "job-1", b"from go")
        await go_node.wait_line(lambda line: line.get("type") == "job-start")
        go_keys = await all_keys(client)
        before = await go_state(client, name)

        handler = Recorder()
        async with pool.open_node(
            client, name, worker_ttl=2.0, worker_shutdown_ttl=2.0, ack_grace_period=1.0
        ) as node:
            await node.add_worker(handler)
            # The same job key is free in the Python pool: its own worker starts it, once.
            await node.dispatch_job("job-1", b"from python")
            await node.dispatch_job("py-only", b"p")
            assert [j.key for j in handler.started] == ["job-1", "py-only"]
            assert handler.started[0].payload == b"from python"
            assert sorted(await node.job_keys()) == ["job-1", "py-only"]
            # Each pool refuses a second job-1 of its own, and only of its own.
            with pytest.raises(pool.JobExistsError):
                await node.dispatch_job("job-1", b"again")
            with pytest.raises(GoProcessError, match="job already exists"):
                await go_node.call("dispatch", key="job-1", payload=b64(b"again"))

            # Every key the Python node wrote is outside the Go pool's namespaces, and the
            # Go pool's keys are all still there, their job state untouched.
            py_keys = await all_keys(client) - go_keys
            assert py_keys, "the Python pool wrote no key"
            clashes = {k for k in py_keys if k.startswith(go_pool_namespaces(name))}
            assert not clashes, sorted(clashes)
            assert go_keys <= await all_keys(client)
            assert await go_state(client, name) == before
            await go_job_keys(go_node, ["job-1"])

            # A Go dispatch and stop reach the Go worker only.
            await go_dispatch(go_node, "go-only", b"g")
            await go_node.call("stop-job", key="job-1")
            await go_node.wait_line(
                lambda line: line.get("type") == "job-stop" and line["key"] == "job-1"
            )
            await go_job_keys(go_node, ["go-only"])
            assert sorted(await node.job_keys()) == ["job-1", "py-only"]
            assert [j.key for j in handler.started] == ["job-1", "py-only"]
            assert handler.stopped == []

            # A Python stop reaches the Python worker only.
            await node.stop_job("py-only")
            assert handler.stopped == ["py-only"]
            await go_dispatch(go_node, "go-2", b"g2")
            await go_node.wait_line(lambda line: line.get("key") == "go-2")
            assert sorted(await node.job_keys()) == ["job-1"]
            # Leave with no job running (nothing to hand over on close).
            await node.stop_job("job-1")
            assert handler.stopped == ["py-only", "job-1"]
        await go_job_keys(go_node, ["go-2", "go-only"])
        assert (await go_node.call("workers"))["workers"] == [go_worker]
        # Only the Go stop reached the Go worker (closing the Go node stops the rest).
        assert [s["key"] for s in go_node.of_type("job-stop")] == ["job-1"]

    starts = go_node.of_type("job-start")
    assert [(s["key"], unb64(s["payload"])) for s in starts] == [
        ("job-1", b"from go"),
        ("go-only", b"g"),
        ("go-2", b"g2"),
    ]
    assert all(s["worker"] == go_worker for s in starts)
