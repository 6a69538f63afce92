"""``pulse-trio inspect`` against a live deployment: tables, ``--json``, filters,
``--values``, ``--watch``, and a Redis Cluster. The command runs its own event loop, so each
test runs it in a worker thread while the deployment lives in the test's loop."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pulse_trio import admin

from ._deploy import EVENTS, JOBS, by_name, deployment, run_cli

pytestmark = pytest.mark.anyio


async def test_tables(
    client: Any, server_url: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with deployment(client, unique) as names:
        result = await run_cli(capsys, "inspect", "--redis-url", server_url)
        snap = await admin.snapshot(client)
    assert (result.status, result.err) == (0, "")
    out = result.out
    assert f"pool {names.pool}: 2 nodes, 2 workers, {JOBS} jobs, 0 queued, 0 failed" in out
    for worker in snap.pools[0].workers:
        assert worker.id in out
        assert worker.node_id is not None
        assert worker.node_id in out
    for index in range(JOBS):
        assert f"job-{index}" in out
    (sink,) = by_name(snap.streams, names.stream).sinks
    assert f"{names.stream}" in out
    assert f" {EVENTS} " in out
    sink_row = next(line for line in out.splitlines() if names.sink in line)
    assert f" {sink.pending} " in sink_row
    assert f" {sink.lag} " in sink_row
    assert f"map {names.map}: 2 keys, revision 2" in out
    assert "welcome-mail" in out
    assert "x" * 59 + "…" in out
    assert "x" * 61 not in out


async def test_json(
    client: Any, server_url: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with deployment(client, unique) as names:
        result = await run_cli(capsys, "inspect", "--json", "--redis-url", server_url)
        pools = await run_cli(
            capsys, "inspect", "pools", names.pool, "--json", "--redis-url", server_url
        )
        maps = await run_cli(
            capsys, "--redis-url", server_url, "inspect", "maps", names.map, "--json"
        )
    assert result.status == 0
    data = json.loads(result.out)
    assert data["version"] == 1
    assert set(data) == {"version", "taken_at", "pools", "streams", "maps"}
    (pool,) = data["pools"]
    assert (pool["name"], pool["layout"], len(pool["nodes"]), len(pool["workers"])) == (
        names.pool,
        "pulse-trio",
        2,
        2,
    )
    assert sorted(k for w in pool["workers"] for k in w["jobs"]) == [
        f"job-{i}" for i in range(JOBS)
    ]
    stream = by_name(data["streams"], names.stream)
    assert stream["length"] == EVENTS
    (sink,) = stream["sinks"]
    assert sink["name"] == names.sink
    assert sink["pending"] >= 1
    assert sink["lag"] >= 1
    assert sink["pending"] + sink["lag"] == EVENTS
    # Filtered: only the kind asked for; JSON values are complete.
    assert set(json.loads(pools.out)) == {"version", "taken_at", "pools"}
    (cfg,) = json.loads(maps.out)["maps"]
    assert cfg["values"]["banner"] == "x" * 300
    assert cfg["size"] == 2
    assert cfg["revision"] == 2


async def test_values_and_watch(
    client: Any, server_url: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with deployment(client, unique) as names:
        full = await run_cli(
            capsys, "inspect", "maps", names.map, "--values", "--redis-url", server_url
        )
        watched = await run_cli(
            capsys, "inspect", "streams", "--json", "--watch", "0.05", "--count", "3",
            "--redis-url", server_url,
        )  # fmt: skip
        live = await run_cli(
            capsys, "inspect", "pools", "--watch", "0.05", "--count", "2",
            "--redis-url", server_url,
        )  # fmt: skip
    assert full.status == 0
    assert "x" * 300 in full.out.replace("\n", "").replace("│", "").replace(" ", "")
    assert watched.status == 0
    documents = [json.loads(line) for line in watched.out.splitlines()]
    assert len(documents) == 3
    assert all("streams" in d for d in documents)
    assert live.status == 0
    assert live.out.count(f"pool {names.pool}") == 2  # not a terminal: one block per refresh


@pytest.mark.cluster
async def test_on_a_cluster(
    cluster_client: Any, cluster_url: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = [f"{unique}-{i}" for i in range(9)]  # spread over the three masters
    for name in extra:
        await cluster_client.execute("HSET", f"map:{name}:content", "k", name, "=rev", "1")
    async with deployment(cluster_client, unique) as names:
        result = await run_cli(capsys, "inspect", "--json", "--redis-url", cluster_url)
        tables = await run_cli(capsys, "inspect", "--redis-url", cluster_url)
    assert result.status == 0, result.err
    data = json.loads(result.out)
    assert {m["name"] for m in data["maps"]} >= {*extra, names.map}
    (pool,) = data["pools"]
    assert pool["name"] == names.pool
    assert len(pool["workers"]) == 2
    assert by_name(data["streams"], names.stream)["length"] == EVENTS
    assert tables.status == 0
    assert f"pool {names.pool}" in tables.out
