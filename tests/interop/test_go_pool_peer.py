"""The Go peer's pool node (goa.design/pulse v1.6.5's pool.AddNode), on its own.

The pool interop test (test_pool_interop.py) needs pulse_trio.pool; this one checks, without
it, the Go half it relies on: the peer's pool commands, and that a Go pool writes only keys
under the namespaces listed by ``go_pool_namespaces``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ._helpers import all_keys, go_dispatch, go_job_keys, go_pool_namespaces
from ._peer import GoProcessError, b64, unb64

pytestmark = pytest.mark.anyio

GO_POOL_FLAGS = ("--worker-ttl", "2000", "--grace", "1000", "--block", "100")


async def test_go_pool_node_runs_jobs_under_its_own_keys(
    client: Any, go: Callable[..., Any], unique: str
) -> None:
    async with go("pool-node", unique, *GO_POOL_FLAGS) as node:
        worker = (await node.call("add-worker"))["worker"]
        await go_dispatch(node, "job-1", b"\x00one")
        start = await node.wait_line(lambda line: line.get("type") == "job-start")
        assert (start["key"], unb64(start["payload"]), start["worker"]) == (
            "job-1",
            b"\x00one",
            worker,
        )
        await go_job_keys(node, ["job-1"])
        with pytest.raises(GoProcessError, match="job already exists"):
            await node.call("dispatch", key="job-1", payload=b64(b"again"))
        keys = await all_keys(client)
        assert f"pulse:stream:{unique}:pool" in keys
        assert f"map:{unique}:jobs:content" in keys
        assert f"pulse:stream:worker:{worker}" in keys
        assert all(k.startswith(go_pool_namespaces(unique)) for k in keys), sorted(keys)
        await node.call("stop-job", key="job-1")
        await node.wait_line(lambda line: line.get("type") == "job-stop")
    assert [line["key"] for line in node.of_type("job-start")] == ["job-1"]
