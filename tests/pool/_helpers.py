"""Helpers for the pool tests: a recording handler, node shortcuts, nodes in child processes."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from pulse_trio import pool

#: Short timings for tests (seconds): TTL for tests about failures (nodes in child
#: processes, partitions); NODE_TTL, the default of node(), leaves room for a loaded machine
#: (a node that misses heartbeats for 0.7 x its TTL fences itself, by design).
TTL = 1.0
NODE_TTL = 2.0
GRACE = 2.0
WORKER_PROCESS = Path(__file__).with_name("worker_process.py")


class Recorder:
    """A handler that records every call (it may serve several workers)."""

    def __init__(self, *, fail_start: Any = None, fail_stop: bool = False) -> None:
        self.running: dict[str, pool.Job] = {}
        self.starts: Counter[str] = Counter()
        self.stops: Counter[str] = Counter()
        self.notes: list[tuple[str, bytes]] = []
        self.fail_start = fail_start
        self.fail_stop = fail_stop
        self.overlaps: list[str] = []
        self.start_delay = 0.0
        self.log: list[tuple[float, str, str]] = []

    async def start(self, job: pool.Job) -> None:
        self.starts[job.key] += 1
        if self.start_delay:
            await anyio.sleep(self.start_delay)
        if self.fail_start is not None and self.fail_start(job):
            raise RuntimeError(f"cannot start {job.key}")
        if job.key in self.running:
            self.overlaps.append(job.key)
        self.running[job.key] = job
        self.log.append((anyio.current_time(), "start", job.key))

    async def stop(self, key: str) -> None:
        self.stops[key] += 1
        self.running.pop(key, None)
        self.log.append((anyio.current_time(), "stop", key))
        if self.fail_stop:
            raise RuntimeError(f"cannot stop {key}")

    async def handle_notification(self, key: str, payload: bytes) -> None:
        self.notes.append((key, payload))


def node(client: Any, name: str, **options: Any) -> pool.Node:
    """A node with the tests' short timings."""
    options.setdefault("worker_ttl", NODE_TTL)
    options.setdefault("ack_grace_period", GRACE)
    options.setdefault("worker_shutdown_ttl", 5.0)
    return pool.open_node(client, name, **options)


class RemoteNode:
    """A node in a child process (see worker_process.py), its output parsed as it comes."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.node_id = ""
        self.worker_ids: list[str] = []
        #: Running job key -> worker id.
        self.running: dict[str, str] = {}
        self.starts: Counter[str] = Counter()
        self.stops: Counter[str] = Counter()
        self.log: list[tuple[float, str, str]] = []
        self.ready = anyio.Event()
        self.overlaps: list[str] = []

    async def read(self) -> None:
        assert self.process.stdout is not None
        lines = BufferedByteReceiveStream(self.process.stdout)
        while True:
            try:
                line = (await lines.receive_until(b"\n", 10_000)).decode().split()
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
                return
            now = anyio.current_time()
            if line[0] == "ready":
                self.node_id, self.worker_ids = line[1], line[2:]
                self.ready.set()
            elif line[0] == "start":
                self.starts[line[1]] += 1
                if line[1] in self.running:
                    self.overlaps.append(line[1])
                self.running[line[1]] = line[2]
                self.log.append((now, "start", line[1]))
            elif line[0] == "stop":
                self.stops[line[1]] += 1
                self.running.pop(line[1], None)
                self.log.append((now, "stop", line[1]))

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)


@contextlib.asynccontextmanager
async def remote_node(
    url: str, name: str, *, ttl: float = TTL, workers: int = 1
) -> AsyncIterator[RemoteNode]:
    """Run a node with ``workers`` workers in a child process for the block."""
    command = [sys.executable, str(WORKER_PROCESS), url, name, str(ttl), str(workers)]
    process = await anyio.open_process(command)
    remote = RemoteNode(process)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(remote.read)
            with anyio.fail_after(30):
                await remote.ready.wait()
            yield remote
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
            await process.wait()
            await process.aclose()
