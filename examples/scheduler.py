"""Scheduling in a pool: ``node.schedule(producer, interval)`` and ``node.open_ticker``.

Run it with ``python examples/scheduler.py`` (an embedded server), or against your own
server with ``--redis-url redis://localhost:6379/0`` (or ``PULSE_REDIS_URL``).

Two nodes of a pool share one schedule: on each tick one of them (never both) calls its
producer's ``plan()`` and applies the ``pool.JobPlan`` it returns: jobs to start, jobs to
stop, or ``stop_all`` of the producer's earlier jobs not in the new plan. Below that,
``node.open_ticker(name, interval)`` gives raw ticks, each to one node of the pool.
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


class Calendar:
    """What should run, plan after plan (in real life: read from a database when planning).

    Once every plan was handed out, the last one stays: nothing more to change.
    """

    def __init__(self, plans: list[pool.JobPlan]) -> None:
        self.plans = plans
        self.calls = 0
        self.settled = anyio.Event()  # set when asked for a plan after the last one

    def next_plan(self) -> pool.JobPlan:
        """The plan for this tick."""
        self.calls += 1
        if self.calls > len(self.plans):
            self.settled.set()
        return self.plans[min(self.calls, len(self.plans)) - 1]


class ReportPlanner:
    """A :class:`pool.JobProducer`: a name and an async ``plan()``."""

    name = "reports"

    def __init__(self, node: str, calendar: Calendar) -> None:
        self.node = node
        self.calendar = calendar

    async def plan(self) -> pool.JobPlan:
        """The jobs that should run now."""
        plan = self.calendar.next_plan()
        if not self.calendar.settled.is_set():
            keys = [key for key, _ in plan.start]
            print(f"  {self.node} plans: start {keys}, stop_all={plan.stop_all}")
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
    """Two nodes share the schedule "reports"; one worker runs the reports."""
    calendar = Calendar(
        [
            pool.JobPlan(start=[("report:eu", b"eu"), ("report:us", b"us")]),
            # stop_all: stop what this producer started before and is not listed now.
            pool.JobPlan(start=[("report:us", b"us"), ("report:asia", b"asia")], stop_all=True),
        ]
    )
    async with pool.open_node(client, POOL) as node_a, pool.open_node(client, POOL) as node_b:
        await node_a.add_worker(pool.job_tasks(report))
        print(f"schedule 'reports' every {INTERVAL}s on node-a and node-b:")
        await node_a.schedule(ReportPlanner("node-a", calendar), INTERVAL)
        await node_b.schedule(ReportPlanner("node-b", calendar), INTERVAL)
        with anyio.fail_after(5):
            await calendar.settled.wait()
        print(f"the pool runs {sorted(await node_a.job_keys())}")
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
