"""Soak: jobs over worker processes that are killed with SIGKILL and replaced at random.

Bounded for CI (200 jobs, 4 processes, 2 kill-and-replace rounds); longer with
``PULSE_SOAK_JOBS=1000 PULSE_SOAK_ROUNDS=20``. At the end every job runs exactly once on a
live worker and none is lost; starts of a job on a live worker while it ran on another live
worker (duplicates) are reported and must be zero.
"""

from __future__ import annotations

import contextlib
import os
import random
from typing import Any

import anyio
import pytest

from .._util import wait_until, wait_until_async
from ._helpers import RemoteNode, node, remote_node

pytestmark = [pytest.mark.anyio, pytest.mark.soak]

JOBS = int(os.environ.get("PULSE_SOAK_JOBS", "200"))
ROUNDS = int(os.environ.get("PULSE_SOAK_ROUNDS", "2"))
PROCESSES = 4


async def test_soak_killed_and_replaced_workers_lose_and_duplicate_nothing(
    client: Any, server_url: str, unique: str
) -> None:
    rng = random.Random(unique)
    keys = [f"soak-{i}" for i in range(JOBS)]
    async with contextlib.AsyncExitStack() as stack:
        dispatcher = await stack.enter_async_context(
            node(client, unique, client_only=True, ack_grace_period=10.0)
        )
        live: list[RemoteNode] = []
        for _ in range(PROCESSES):
            live.append(await stack.enter_async_context(remote_node(server_url, unique)))
        async with anyio.create_task_group() as tg:
            for first in range(16):

                async def dispatch(first: int = first) -> None:
                    for key in keys[first::16]:
                        await dispatcher.dispatch_job(key, b"")

                tg.start_soon(dispatch)
        all_nodes = list(live)
        for round_ in range(ROUNDS):
            victim = live.pop(rng.randrange(len(live)))
            victim.kill()
            await victim.process.wait()
            live.append(await stack.enter_async_context(remote_node(server_url, unique)))
            all_nodes.append(live[-1])
            await anyio.sleep(rng.uniform(0.1, 1.0))
            print(f"round {round_}: killed {victim.node_id}, started {live[-1].node_id}")

        def exactly_once() -> bool:
            seen: dict[str, int] = {}
            for remote in live:
                for key in remote.running:
                    seen[key] = seen.get(key, 0) + 1
            return set(seen) == set(keys) and set(seen.values()) == {1}

        await wait_until(exactly_once, within=15, what="every job running exactly once")
        infos = await dispatcher.jobs()
        assert len(infos) == JOBS

        async def all_running() -> bool:
            # A handler prints its start before the node acknowledges it: the last records
            # turn "running" one acknowledgement later.
            return {info.state for info in await dispatcher.jobs()} == {"running"}

        await wait_until_async(all_running, within=5, what="every record running")
        duplicates = sum(len(remote.overlaps) for remote in all_nodes)
        starts = sum(sum(remote.starts.values()) for remote in all_nodes)
        print(f"soak: {JOBS} jobs, {ROUNDS} kills, {starts} starts, {duplicates} duplicates")
        assert duplicates == 0
