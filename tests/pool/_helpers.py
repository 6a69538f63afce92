"""Helpers for the pool tests: a recording handler, node shortcuts."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio

from pulse_trio import pool

#: Short timings for tests (seconds).
TTL = 1.0
GRACE = 2.0


class Recorder:
    """A handler that records every call (shared across workers if wanted)."""

    def __init__(self, *, fail_start: Any = None, fail_stop: bool = False) -> None:
        self.running: dict[str, pool.Job] = {}
        self.starts: Counter[str] = Counter()
        self.stops: Counter[str] = Counter()
        self.notes: list[tuple[str, bytes]] = []
        self.fail_start = fail_start
        self.fail_stop = fail_stop
        self.concurrent_violations: list[str] = []
        self.start_delay = 0.0

    async def start(self, job: pool.Job) -> None:
        self.starts[job.key] += 1
        if self.start_delay:
            await anyio.sleep(self.start_delay)
        if self.fail_start is not None and self.fail_start(job):
            raise RuntimeError(f"cannot start {job.key}")
        if job.key in self.running:
            self.concurrent_violations.append(job.key)
        self.running[job.key] = job

    async def stop(self, key: str) -> None:
        self.stops[key] += 1
        self.running.pop(key, None)
        if self.fail_stop:
            raise RuntimeError(f"cannot stop {key}")

    async def handle_notification(self, key: str, payload: bytes) -> None:
        self.notes.append((key, payload))


def node(client: Any, name: str, **options: Any) -> pool.Node:
    options.setdefault("worker_ttl", TTL)
    options.setdefault("ack_grace_period", GRACE)
    options.setdefault("worker_shutdown_ttl", 5.0)
    return pool.open_node(client, name, **options)
