"""Scheduling in a pool: ``node.schedule(producer, interval)`` and ``node.open_ticker``.

Run it with ``python examples/scheduler.py`` (an embedded server), or against your own
server with ``--redis-url redis://localhost:6379/0`` (or ``PULSE_REDIS_URL``).

On each tick of a schedule, a node calls its producer's ``plan()`` and applies the
``pool.JobPlan`` it returns: jobs to start, jobs to stop, or ``stop_all`` of the producer's
earlier jobs not in the new plan. Every node of a pool may schedule the same producer: each
tick reaches one of them (never both), so the schedule survives the loss of a node. Below
that, ``node.open_ticker(name, interval)`` gives raw ticks, each to one node of the pool:
the next tick goes to a node that is waiting for one, never to a busy one.
"""

from __future__ import annotations

import anyio
import anyio.abc
from _server import example_client

import pulse_trio
from pulse_trio import pool

POOL = "scheduler:reports"
INTERVAL = 0.1  # seconds between ticks (minutes or hours in real life)
TICKS = 6


class ReportPlanner:
    """A :class:`pool.JobProducer` (a name and an async ``plan()``) with a fixed calendar.

    In real life ``plan`` would read what should run from a database. Here it hands out the
    plans of its calendar in turn, then keeps returning the last one: nothing more to change.
    """

    name = "reports"

    def __init__(self, calendar: list[pool.JobPlan]) -> None:
        self.calendar = calendar
        self.calls = 0
        self.settled = anyio.Event()  # set when asked again after the last plan

    async def plan(self) -> pool.JobPlan:
        """The jobs that should run now."""
        self.calls += 1
        if self.calls > len(self.calendar):
            self.settled.set()
            return self.calendar[-1]
        plan = self.calendar[self.calls - 1]
        print(f"  plan: start {[key for key, _ in plan.start]}, stop_all={plan.stop_all}")
        return plan


async def report(job: pool.Job, *, task_status: anyio.abc.TaskStatus[None]) -> None:
    """A report job: runs until the schedule stops it."""
    task_status.started()
    print(f"    started {job.key}")
    try:
        await anyio.sleep_forever()  # build the report
    finally:
        print(f"    stopped {job.key}")


async def run_schedule(client: pulse_trio.Client) -> None:
    """A node runs the schedule "reports"; its worker runs the reports."""
    planner = ReportPlanner(
        [
            pool.JobPlan(start=[("report:eu", b"eu"), ("report:us", b"us")]),
            # stop_all: stop what this producer started before and is not listed now.
            pool.JobPlan(start=[("report:us", b"us"), ("report:asia", b"asia")], stop_all=True),
        ]
    )
    async with pool.open_node(client, POOL) as node:
        await node.add_worker(pool.job_tasks(report))
        print(f"schedule 'reports' every {INTERVAL}s:")
        await node.schedule(planner, INTERVAL)
        with anyio.fail_after(5):
            await planner.settled.wait()  # the node asked again: the last plan is applied
        print(f"the pool runs {sorted(await node.job_keys())}")
    # A schedule runs until its node closes (and stays in Redis for the pool's other nodes).


async def run_ticker(client: pulse_trio.Client) -> None:
    """Two nodes receive the ticks of the ticker "cleanup"; each tick reaches one of them."""
    ticks: list[str] = []
    async with (
        pool.open_node(client, POOL) as node_a,
        pool.open_node(client, POOL) as node_b,
        anyio.create_task_group() as tg,
    ):

        async def receive(node: pool.Node, label: str) -> None:
            async with node.open_ticker("cleanup", INTERVAL) as ticker:
                async for tick in ticker:
                    ticks.append(label)
                    due = tick.at.time().isoformat(timespec="milliseconds")
                    print(f"  {label} got the tick due at {due} (count {tick.count})")
                    if len(ticks) == TICKS:
                        tg.cancel_scope.cancel()
                    # The cleanup work: while this node is busy, the next tick goes elsewhere.
                    await anyio.sleep(INTERVAL * 1.5)

        print(f"a ticker 'cleanup' every {INTERVAL}s on node-a and node-b:")
        tg.start_soon(receive, node_a, "node-a")
        tg.start_soon(receive, node_b, "node-b")
    print(f"{len(ticks)} ticks, each to one node: {ticks}")


async def main() -> None:
    """Run a schedule, then a ticker."""
    async with example_client("scheduler") as client:
        await run_schedule(client)
        await run_ticker(client)


if __name__ == "__main__":
    anyio.run(main, backend="trio")
