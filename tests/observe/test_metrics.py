"""OpenTelemetry metrics (``pulse_trio._metrics``) read with the SDK's in-memory reader, on
a real server, on both backends: every family of the observability page moves when the
thing it counts happens."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import anyio
import anyio.abc
import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel SDK (dev dependency) is missing")

from opentelemetry import metrics as otel_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from pulse_trio import _metrics, pool, rmap, streaming

from .._util import wait_until

pytestmark = pytest.mark.anyio

_READER: InMemoryMetricReader | None = None


@pytest.fixture(scope="session")
def reader() -> InMemoryMetricReader:
    """The process's one SDK meter provider (OpenTelemetry allows setting it once)."""
    global _READER
    if not _metrics.ENABLED:
        pytest.skip("metrics are off (PULSE_TRIO_METRICS=0 or no opentelemetry-api)")
    if _READER is None:
        _READER = InMemoryMetricReader()
        otel_metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))
    return _READER


@pytest.fixture
def fast_gauges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sinks refresh their gauges every 50 ms instead of every 15 s."""
    monkeypatch.setattr(_metrics, "GAUGE_INTERVAL", 0.05)


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Collect now: data points by metric name (scope ``pulse_trio`` only)."""
    data = reader.get_metrics_data()
    found: dict[str, list[Any]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            if scope.scope.name != _metrics.METER_NAME:
                continue
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def value(found: dict[str, list[Any]], name: str, **attributes: str) -> Any:
    """The value of the point of ``name`` whose attributes include ``attributes``."""
    wanted = {key.replace("__", "."): item for key, item in attributes.items()}
    for point in found.get(name, []):
        if all(point.attributes.get(k) == v for k, v in wanted.items()):
            return point.count if isinstance(point, HistogramDataPoint) else point.value
    return None


async def test_stream_and_sink_metrics(
    client: Any, unique: str, reader: InMemoryMetricReader, fast_gauges: None
) -> None:
    stream = streaming.Stream(client, f"{unique}-s")
    sink_attrs = {
        "messaging__destination__name": stream.name,
        "messaging__consumer__group__name": "mail",
    }
    async with stream.open_sink("mail", max_deliveries=1, ack_grace_period=0.2) as sink:
        await stream.add("a", b"1")
        await stream.add_many([("b", b"2"), ("c", b"3")])
        delivered = []
        for _ in range(3):
            delivered.append(await sink.__anext__())
        await sink.ack(delivered[0], delivered[1])  # the third stays pending

        def gauges_read() -> bool:
            found = points(reader)
            return bool(
                value(found, "pulse_trio.sink.pending", **sink_attrs) == 1
                and value(found, "pulse_trio.sink.lag", **sink_attrs) == 0
                and value(
                    found, "pulse_trio.stream.length", messaging__destination__name=stream.name
                )
                == 3
            )

        await wait_until(gauges_read, within=10, interval=0.05, what="sink gauges refreshed")
        found = points(reader)
        sent = "messaging.client.sent.messages"
        assert value(found, sent, messaging__destination__name=stream.name) == 3
        assert value(found, "messaging.client.consumed.messages", **sink_attrs) == 3
        assert value(found, "pulse_trio.sink.acknowledged", **sink_attrs) == 2
        # The unacknowledged event is claimed back past max_deliveries: dead-lettered.
        await wait_until(
            lambda: value(points(reader), "pulse_trio.sink.dead_lettered", **sink_attrs) == 1,
            within=15,
            interval=0.1,
            what="the pending event was dead-lettered",
        )


async def _job(job: pool.Job, *, task_status: anyio.abc.TaskStatus[None]) -> None:
    task_status.started()
    await anyio.sleep_forever()


async def test_pool_metrics(client: Any, unique: str, reader: InMemoryMetricReader) -> None:
    name = f"{unique}-pool"
    attrs = {"pulse_trio__pool__name": name}
    async with pool.open_node(client, name) as node:
        worker = await node.add_worker(pool.job_tasks(_job))
        for index in range(10):
            await node.dispatch_job(f"job-{index}", b"x")
        await node.stop_job("job-0")
        found = points(reader)
        assert value(found, "pulse_trio.pool.jobs.dispatched", **attrs) == 10
        assert value(found, "pulse_trio.pool.jobs.started", **attrs) == 10
        assert value(found, "pulse_trio.pool.dispatch.duration", **attrs) == 10
        await wait_until(
            lambda: value(points(reader), "pulse_trio.pool.jobs.stopped", **attrs) == 1,
            what="the stop was counted",
        )
        jobs = value(
            points(reader), "pulse_trio.pool.worker.jobs", pulse_trio__worker__id=worker.id
        )
        assert jobs == 9
        # A second worker takes some of the 9 jobs over (all 9 staying has odds 2**-9):
        # moves and one rebalance are counted.
        await node.add_worker(pool.job_tasks(_job))
        await wait_until(
            lambda: (value(points(reader), "pulse_trio.pool.rebalances", **attrs) or 0) >= 1,
            within=10,
            what="a rebalance was counted",
        )
        await wait_until(  # counted once the worker stopped it, after the rebalance
            lambda: (value(points(reader), "pulse_trio.pool.jobs.moved", **attrs) or 0) >= 1,
            within=10,
            what="a move was counted",
        )
        async with node.open_ticker("tick", 0.05) as ticker:
            async for _tick in ticker:
                break
        assert value(points(reader), "pulse_trio.pool.ticks", **attrs) >= 1
        await node.shutdown()


async def test_map_and_transport_metrics(
    client: Any, unique: str, reader: InMemoryMetricReader
) -> None:
    before = points(reader)
    server = str(client.statistics()[0].name)
    commands_before = value(before, "pulse_trio.client.commands", server__address=server) or 0
    async with rmap.join(client, f"{unique}-m") as replica:
        await replica.set("a", "1")
        await replica.inc("n", 2)
        for _ in range(_metrics.LATENCY_SAMPLE_EVERY * 2):
            await client.execute("PING")
        found = points(reader)
        map_attrs = {"pulse_trio__map__name": replica.name}
        await wait_until(  # the set's revision reached the replica: its lag was recorded
            lambda: value(points(reader), "pulse_trio.map.replica.lag", **map_attrs) == 1,
            what="the replica lag of the set",
        )
        found = points(reader)
        assert value(found, "pulse_trio.map.writes", **map_attrs) == 2
        assert (
            value(
                found, "pulse_trio.map.resyncs", **map_attrs, pulse_trio__resync__reason="initial"
            )
            == 1
        )
        commands = value(found, "pulse_trio.client.commands", server__address=server)
        assert commands >= commands_before + _metrics.LATENCY_SAMPLE_EVERY * 2
        assert value(found, "pulse_trio.client.batch_size", server__address=server) >= 1
        assert value(found, "db.client.operation.duration", server__address=server) >= 1
        assert value(found, "pulse_trio.client.reconnects", server__address=server) is not None
        used = value(
            found,
            "db.client.connection.count",
            db__client__connection__pool__name=server,
            db__client__connection__state="used",
        )
        assert used is not None


def test_switched_off_registers_nothing() -> None:
    """``PULSE_TRIO_METRICS=0`` (the path of an install without the otel extra): cells are
    bumped, no instrument exists, no pool node is tracked."""
    program = (
        "from pulse_trio import _metrics\n"
        "assert not _metrics.ENABLED\n"
        "_metrics.stream_cell('s').added += 1\n"
        "_metrics.track_pool_node(object(), 'p')\n"
        "assert _metrics.dispatch_duration is None and _metrics.client_duration is None\n"
        "assert not _metrics._pool_nodes and not _metrics._set_up\n"
    )
    env = {**os.environ, "PULSE_TRIO_METRICS": "0"}
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
