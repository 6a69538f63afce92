"""Model-based test of a real pool: workers added, removed and killed (a node in a child
process, SIGKILL), jobs dispatched, stopped and notified. After each step, once the pool is
stable: every job of the model runs on exactly one worker, that worker is alive, no job is
lost or extra, no job ever ran on two workers at once, and the owner is the routing
function's choice for the live workers. 4 examples per backend by default; more with
``PULSE_POOL_MACHINE_EXAMPLES=25``."""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Any

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import pulse_trio
from pulse_trio import pool
from pulse_trio.pool import _routing

from ..pool._helpers import Recorder, RemoteNode, node, remote_node

KEYS = st.sampled_from([f"job-{i}" for i in range(8)])
STABLE_WITHIN = 8.0


def make_machine(url: str, backend: str) -> type[RuleBasedStateMachine]:
    class PoolMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.stack = contextlib.ExitStack()
            self.portal = self.stack.enter_context(anyio.from_thread.start_blocking_portal(backend))
            self.client: Any = self.stack.enter_context(
                self.portal.wrap_async_context_manager(pulse_trio.connect(url))
            )
            self.name = "sm-" + uuid.uuid4().hex[:8]
            self.nodes: list[pool.Node] = [
                self.stack.enter_context(
                    self.portal.wrap_async_context_manager(node(self.client, self.name))
                )
                for _ in range(2)
            ]
            self.workers: dict[str, tuple[pool.Node, pool.Worker, Recorder]] = {}
            self.remote: RemoteNode | None = None
            self.remote_stack: contextlib.ExitStack | None = None
            self.model: set[str] = set()
            self._add(0)

        def teardown(self) -> None:
            if self.remote_stack is not None:
                self.remote_stack.close()
            self.stack.close()

        def call(self, fn: Any, *args: Any) -> Any:
            return self.portal.call(fn, *args)

        def _add(self, i: int) -> None:
            recorder = Recorder()
            worker = self.call(self.nodes[i].add_worker, recorder)
            self.workers[worker.id] = (self.nodes[i], worker, recorder)
            note(f"node {i}: added worker {worker.id}")

        def live_workers(self) -> set[str]:
            ids = set(self.workers)
            if self.remote is not None:
                ids |= set(self.remote.worker_ids)
            return ids

        @rule(i=st.integers(0, 1))
        def add_worker(self, i: int) -> None:
            self._add(i)

        @precondition(lambda self: len(self.workers) > 1)
        @rule(data=st.data())
        def remove_worker(self, data: st.DataObject) -> None:
            wid = data.draw(st.sampled_from(sorted(self.workers)))
            n, worker, _ = self.workers.pop(wid)
            note(f"removed worker {wid}")
            self.call(n.remove_worker, worker)

        @precondition(lambda self: self.remote is None)
        @rule()
        def start_remote_node(self) -> None:
            self.remote_stack = contextlib.ExitStack()
            self.remote = self.remote_stack.enter_context(
                self.portal.wrap_async_context_manager(remote_node(url, self.name, workers=1))
            )
            note(f"remote node {self.remote.node_id} with {self.remote.worker_ids}")

        @precondition(lambda self: self.remote is not None)
        @rule()
        def kill_remote_node(self) -> None:
            assert self.remote is not None
            assert self.remote_stack is not None
            note(f"SIGKILL remote node {self.remote.node_id}")
            self.portal.call(self._kill)
            self.remote_stack.close()
            self.remote = None
            self.remote_stack = None

        async def _kill(self) -> None:
            assert self.remote is not None
            self.remote.kill()
            await self.remote.process.wait()

        @rule(key=KEYS, i=st.integers(0, 1))
        def dispatch(self, key: str, i: int) -> None:
            note(f"node {i}: dispatch {key}")
            try:
                self.call(self.nodes[i].dispatch_job, key, key.encode())
            except pool.JobExistsError:
                assert key in self.model
            else:
                assert key not in self.model
                self.model.add(key)

        @rule(key=KEYS, i=st.integers(0, 1))
        def stop(self, key: str, i: int) -> None:
            note(f"node {i}: stop {key}")
            try:
                self.call(self.nodes[i].stop_job, key)
            except pool.JobNotFoundError:
                assert key not in self.model
            else:
                assert key in self.model
                self.model.discard(key)

        @rule(key=KEYS)
        def notify(self, key: str) -> None:
            note(f"notify {key}")
            outcome = "ok"
            try:
                self.call(self.nodes[1].notify_worker, key, b"hi")
            except pool.JobNotFoundError:
                outcome = "not found"
            except pool.NotificationError as exc:
                outcome = str(exc)
            if outcome == "not found":
                assert key not in self.model
            elif outcome != "ok":
                # Only the child process's handler has no handle_notification.
                assert "handle_notification" in outcome
            else:
                assert key in self.model
                assert any((key, b"hi") in rec.notes for _, _, rec in self.workers.values())

        def observed(self) -> dict[str, list[str]]:
            where: dict[str, list[str]] = {}
            for wid, (_, _, rec) in self.workers.items():
                for key in rec.running:
                    where.setdefault(key, []).append(wid)
            if self.remote is not None:
                for key, wid in self.remote.running.items():
                    where.setdefault(key, []).append(wid)
            return where

        def stable(self) -> bool:
            live = self.live_workers()
            where = self.observed()
            return set(where) == self.model and all(
                owners == [_routing.owner(key, live)] for key, owners in where.items()
            )

        @invariant()
        def every_job_runs_once_on_its_owner(self) -> None:
            async def settle() -> bool:
                with anyio.move_on_after(STABLE_WITHIN):
                    while not self.stable():
                        await anyio.sleep(0.02)
                    return True
                return False

            if not self.call(settle):
                raise AssertionError(
                    f"not stable: model {sorted(self.model)}, observed {self.observed()}, "
                    f"live workers {sorted(self.live_workers())}"
                )
            for _, _, rec in self.workers.values():
                assert rec.overlaps == []
            if self.remote is not None:
                assert self.remote.overlaps == []

    return PoolMachine


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_pool_jobs_always_run_once_on_their_owner(server_url: str, backend: str) -> None:
    machine = make_machine(server_url, backend)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=int(os.environ.get("PULSE_POOL_MACHINE_EXAMPLES", "4")),
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
