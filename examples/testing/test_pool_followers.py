"""A pool job handler that runs one follower per job, tested by
:class:`~pulse_trio.testing.machines.PoolMachine`.

Each job of the pool runs a *follower* (say, a task tailing an external feed) for its key.
Jobs are dispatched and stopped, and move between workers as workers come and go; the
application's invariant is that every job has exactly one running follower, and that a
stopped job has none. A handler whose ``stop`` forgets to stop the follower leaks one; the
machine finds it and shrinks the run to a few steps; the correct handler passes.

Run: ``pytest examples/testing/test_pool_followers.py`` (needs ``pulse-trio[testing]``).
"""

from __future__ import annotations

from collections import Counter

import anyio
import anyio.lowlevel
import pytest

from pulse_trio import pool
from pulse_trio.testing.machines import PoolMachine

# --- the application ------------------------------------------------------------------------


class Followers:
    """Where followers run: how many are running for each key (all workers together)."""

    def __init__(self) -> None:
        self.running: Counter[str] = Counter()

    def start(self, key: str) -> None:
        self.running[key] += 1

    def stop(self, key: str) -> None:
        self.running[key] -= 1
        if not self.running[key]:
            del self.running[key]


class FollowerHandler:
    """Starts a follower for each job of its worker, stops it with the job."""

    def __init__(self, followers: Followers) -> None:
        self.followers = followers
        self.mine: set[str] = set()

    async def start(self, job: pool.Job) -> None:
        await anyio.lowlevel.checkpoint()  # connecting to the feed
        self.followers.start(job.key)
        self.mine.add(job.key)

    async def stop(self, key: str) -> None:
        if key in self.mine:
            self.mine.discard(key)
            self.followers.stop(key)


class LeakyFollowerHandler(FollowerHandler):
    """BUG (planted): ``stop`` forgets the job, but leaves its follower running."""

    async def stop(self, key: str) -> None:
        self.mine.discard(key)


# --- the machine ----------------------------------------------------------------------------


class OneFollowerPerJob(PoolMachine):
    """Every job has exactly one running follower; a key without a job has none."""

    handler_class: type[FollowerHandler] = FollowerHandler
    worker_ttl = 1.0  # partitions last 1.5 s: short examples

    def __init__(self) -> None:
        super().__init__()
        self.followers = Followers()

    def make_handler(self) -> pool.JobHandler:
        return self.handler_class(self.followers)

    def check(self) -> None:
        for key, count in self.followers.running.items():
            assert count <= 1, f"{key} has {count} running followers"
            assert key in self.jobs, f"{key} was stopped but its follower still runs"

    def check_stable(self) -> None:
        for key in self.jobs:
            assert self.followers.running[key] == 1, f"{key} has no running follower"

    def check_closed(self) -> None:
        assert not self.followers.running, f"followers left running: {self.followers.running}"


class LeakyFollowers(OneFollowerPerJob):
    """The same machine over the buggy handler."""

    handler_class = LeakyFollowerHandler
    # The bug needs no partition, and partitions are the slowest steps (1.5 x worker_ttl):
    # without them, finding and shrinking take seconds.
    partitions = False


def test_every_job_has_one_follower(pulse_server: str) -> None:
    OneFollowerPerJob.run(pulse_server, max_examples=4, steps=6)


def test_the_machine_finds_the_leaked_follower(pulse_server: str) -> None:
    with pytest.raises(AssertionError, match=r"follower") as failure:
        LeakyFollowers.run(pulse_server, max_examples=20, steps=6)
    steps = "\n".join(getattr(failure.value, "__notes__", []))
    print(steps)  # the shortest failing sequence of steps that Hypothesis found
    assert "state.dispatch(" in steps
