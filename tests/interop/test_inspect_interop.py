"""``pulse-trio inspect`` of a deployment where Go services (goa.design/pulse v1.6.5, through
the Go peer) run a map, a stream with a sink, and a pool."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from ..cli._deploy import by_name, run_cli
from ._helpers import go_dispatch, go_job_keys
from ._peer import b64

pytestmark = pytest.mark.anyio

GO_POOL_FLAGS = ("--worker-ttl", "2000", "--grace", "1000", "--block", "100")
EVENTS = 3


async def test_inspect_sees_go_maps_streams_and_pools(
    client: Any,
    server_url: str,
    go: Callable[..., Any],
    unique: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pool_name, stream_name, map_name = f"{unique}-pool", f"{unique}-events", f"{unique}-cfg"
    async with (
        go("map-join", map_name) as go_map,
        go("stream", stream_name) as go_stream,
        # Without --ack the Go sink leaves what it reads pending.
        go("sink", stream_name, "audit", "--block", "100") as go_sink,
        go("pool-node", pool_name, *GO_POOL_FLAGS) as go_node,
    ):
        await go_map.call("set", key="flag", value="on")
        for index in range(EVENTS):
            await go_stream.call("add", name="user.created", payload=b64(f"u{index}".encode()))
        await go_sink.wait_count("event", EVENTS)
        worker = (await go_node.call("add-worker"))["worker"]
        await go_dispatch(go_node, "job-1", b"payload")
        await go_job_keys(go_node, ["job-1"])
        result = await run_cli(capsys, "inspect", "--json", "--redis-url", server_url)
        tables = await run_cli(capsys, "inspect", "--redis-url", server_url)
    assert result.status == 0, result.err
    data = json.loads(result.out)
    cfg = by_name(data["maps"], map_name)
    assert cfg["values"] == {"flag": "on"}
    assert cfg["revision"] == 1
    stream = by_name(data["streams"], stream_name)
    assert stream["length"] == EVENTS
    (sink,) = stream["sinks"]
    assert (sink["name"], sink["pending"], sink["lag"], len(sink["consumers"])) == (
        "audit",
        EVENTS,
        0,
        1,
    )
    pool = next(p for p in data["pools"] if p["name"] == pool_name)
    assert pool["layout"] == "goa"
    (go_worker,) = pool["workers"]
    assert go_worker["id"] == worker
    assert go_worker["jobs"] == ["job-1"]
    assert go_worker["heartbeat_age"] is not None
    assert go_worker["heartbeat_age"] < 10
    assert tables.status == 0
    assert f"pool {pool_name} (goa.design/pulse)" in tables.out
    assert worker in tables.out
