"""Long-running jobs in a worker pool, written as tasks with ``pool.job_tasks``.

Run it with ``python examples/long_running_jobs.py`` (an embedded server), or against your
own server with ``--redis-url redis://localhost:6379/0`` (or ``PULSE_REDIS_URL``).

Each job syncs one mailbox until it is stopped. ``pool.job_tasks(fn)`` runs every job as a
task of its worker: ``task_status.started()`` acknowledges the dispatch, and stopping the job
cancels the task (its ``finally`` runs). The example starts four jobs on two workers, stops
one with ``stop_job``, then removes a worker: its jobs are stopped there and restarted on the
other worker (``job.requeued`` is then true).
"""

from __future__ import annotations

import anyio
import anyio.abc
from _server import example_client

from pulse_trio import pool

MAILBOXES = ["ada", "alan", "grace", "linus"]
FETCH_EVERY = 0.05  # seconds


class MailboxSync:
    """The jobs' function, telling ``main`` each start through ``started``."""

    def __init__(self, started: anyio.abc.ObjectSendStream[tuple[str, str]]) -> None:
        self.worker_names: dict[str, str] = {}
        self.started = started

    async def run(self, job: pool.Job, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Sync the mailbox of ``job`` until the job is stopped."""
        worker = self.worker_names[job.worker_id]
        moved = " (moved here)" if job.requeued else ""
        print(f"  {worker}: syncing {job.payload.decode()}'s mailbox{moved}")
        task_status.started()  # dispatch_job returns now
        await self.started.send((worker, job.key))
        fetches = 0
        try:
            while True:  # until the job is stopped
                fetches += 1  # fetch new mail
                await anyio.sleep(FETCH_EVERY)
        finally:
            print(f"  {worker}: stopped {job.key} (fetched {fetches}x)")


async def main() -> None:
    """Start jobs on two workers, stop one job, remove a worker and watch its jobs move."""
    async with example_client("long_running_jobs") as client:
        started_send, started = anyio.create_memory_object_stream[tuple[str, str]](10)
        sync = MailboxSync(started_send)
        async with (
            started_send,
            started,
            pool.open_node(client, "long_running_jobs:mail") as node,
        ):
            workers = [await node.add_worker(pool.job_tasks(sync.run)) for _ in range(2)]
            sync.worker_names.update({w.id: f"worker-{n}" for n, w in enumerate(workers, 1)})

            print("dispatch four jobs:")
            for name in MAILBOXES:
                await node.dispatch_job(f"mailbox:{name}", name.encode())
                await started.receive()
            for worker in workers:
                print(f"{sync.worker_names[worker.id]} runs {sorted(worker.job_keys())}")

            print("stop_job('mailbox:ada'):")
            await node.stop_job("mailbox:ada")
            print(f"the pool's jobs: {sorted(await node.job_keys())}")

            busiest = max(workers, key=lambda w: len(w.job_keys()))
            moving = sorted(busiest.job_keys())
            print(f"remove {sync.worker_names[busiest.id]}, which runs {moving}:")
            await node.remove_worker(busiest)
            restarted = sorted([await started.receive() for _ in moving])
            print(f"restarted: {restarted}")
            print("leaving the block closes the node, which stops its jobs:")


if __name__ == "__main__":
    anyio.run(main, backend="trio")
