"""A small live deployment for the inspect tests, and how to run the CLI in-process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import attrs
import pytest

import pulse_trio
from pulse_trio import admin, pool, rmap, streaming
from pulse_trio.cli import main

from .._util import wait_until_async

#: Events added to the deployment's stream.
EVENTS = 5
#: Jobs dispatched to the deployment's pool.
JOBS = 4


@attrs.frozen
class Deployment:
    """Names of what :func:`deployment` runs."""

    pool: str
    stream: str
    sink: str
    map: str


@attrs.frozen
class Result:
    """What one CLI run returned and printed."""

    status: int
    out: str
    err: str


async def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """Run ``main(args)`` in a worker thread (it runs its own event loop); capture output."""
    capsys.readouterr()
    status = await anyio.to_thread.run_sync(main, list(args))
    captured = capsys.readouterr()
    return Result(status, captured.out, captured.err)


async def _job(job: pool.Job, *, task_status: anyio.abc.TaskStatus[None]) -> None:
    task_status.started()
    await anyio.sleep_forever()


@contextlib.asynccontextmanager
async def deployment(client: pulse_trio.Client, prefix: str) -> AsyncIterator[Deployment]:
    """A pool of two nodes running jobs, a stream with a sink holding pending and undelivered
    events, and a map, all live for the block."""
    names = Deployment(f"{prefix}-pool", f"{prefix}-events", f"{prefix}-email", f"{prefix}-cfg")
    stream = streaming.Stream(client, names.stream)
    async with (
        pool.open_node(client, names.pool) as node_a,
        pool.open_node(client, names.pool) as node_b,
        rmap.join(client, names.map) as flags,
        # One event buffered, one being read: the rest stays undelivered (lag).
        stream.open_sink(names.sink, max_polled=1, buffer_size=1) as _sink,
    ):
        await node_a.add_worker(pool.job_tasks(_job))
        await node_b.add_worker(pool.job_tasks(_job))
        for index in range(JOBS):
            await node_a.dispatch_job(f"job-{index}", b"payload")
        await flags.set("welcome-mail", "on")
        await flags.set("banner", "x" * 300)
        for index in range(EVENTS):
            await stream.add("user.created", f"user-{index}".encode())

        async def sink_read() -> bool:
            (info,) = await admin.streams(client, names.stream)
            return info.sinks[0].pending >= 1 and (info.sinks[0].lag or 0) >= 1

        await wait_until_async(sink_read, what="the sink read some events, not all")
        try:
            yield names
        finally:
            with anyio.CancelScope(shield=True), anyio.fail_after(30):
                await node_a.shutdown()


def by_name(items: Any, name: str) -> Any:
    """The item of ``items`` (dicts or snapshots) named ``name``."""
    for item in items:
        if (item["name"] if isinstance(item, dict) else item.name) == name:
            return item
    raise AssertionError(f"{name!r} not in {items!r}")
