"""The pool node: dispatch, stop, notify, listing, errors (real Redis, both backends)."""

from __future__ import annotations

from typing import Any

import pytest

from pulse_trio import pool

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
