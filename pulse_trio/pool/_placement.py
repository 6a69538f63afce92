"""A node's placement: assigning unassigned jobs, rebalancing, moving and releasing jobs.

Placement routes keys with the membership the node knows (``_routing.py``, pure) and assigns
them with ``pool_place``, which checks the epoch (a stale view is answered with the current
membership and the node routes again). When the membership changes, the rebalance task finds
the jobs of this node's workers that routing now gives to another worker and moves each one,
in its key's queue: **stop before start** (guarantee 3), the job is stopped here and only
then handed to its new owner (``pool_move``: released by its old worker and assigned to the
new one in one step, in batches; a new worker on this node is started here directly, with no
stream message). A job whose start finished after the membership changed is checked the same
way (:meth:`Placement.check_placement`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping

import anyio
import anyio.lowlevel
import attrs

from .. import _metrics
from .._boundary import text
from . import _routing
from ._node_state import MembershipView, Phase, Retrier
from ._protocol import Job, Membership
from ._redis import PoolRedis
from ._worker import Worker

#: Moved jobs handed over per ``pool_move`` call: a call blocks Redis for about 10 us per
#: job, and the jobs of one call start here while Redis runs the next.
MOVE_BATCH = 1000
#: Keys a rebalance routes between two checkpoints: the moves queued so far run meanwhile
#: (their objects die young instead of piling up for the garbage collector's oldest
#: generation), and the hand-over overlaps the routing.
ROUTE_CHUNK = 1000


@attrs.define(eq=False)
class _Moved:
    """A job stopped on its old worker, waiting to be handed to its new owner."""

    worker_id: str
    token: str
    job: Job
    #: The owner routing chose, under the membership of ``epoch``.
    target: str | None
    epoch: str
    #: The workers ``target`` outscored for the key, and its digest (``_LocalJob.beats``).
    routed: _routing.Routed | None = None


class _MoveOp:
    """A worker's queue operation: ``Placement._move`` of one key (one object per key: a
    rebalance queues thousands)."""

    __slots__ = ("epoch", "key", "placement", "routed", "target", "worker")

    def __init__(
        self,
        placement: Placement,
        worker: Worker,
        key: str,
        target: str | None,
        epoch: str,
        routed: _routing.Routed | None = None,
    ) -> None:
        self.placement = placement
        self.worker = worker
        self.key = key
        self.target = target
        self.epoch = epoch
        self.routed = routed

    def __call__(self) -> Awaitable[None]:
        return self.placement._move(self.worker, self.key, self.target, self.epoch, self.routed)


class _StartOp:
    """A worker's queue operation: the start of a job moved to it (``Worker._start_job``)."""

    __slots__ = ("epoch", "job", "routed", "token", "worker")

    def __init__(
        self,
        worker: Worker,
        job: Job,
        token: str,
        epoch: str,
        routed: _routing.Routed | None,
    ) -> None:
        self.worker = worker
        self.job = job
        self.token = token
        self.epoch = epoch
        self.routed = routed

    def __call__(self) -> Awaitable[None]:
        return self.worker._start_job(self.job, self.token, self.epoch, self.routed)


class Placement:
    """Places unassigned jobs and moves this node's jobs when routing changes."""

    def __init__(
        self,
        *,
        io: PoolRedis,
        node_id: str,
        phase: Phase,
        workers: Mapping[str, Worker],
        view: MembershipView,
        retrying: Retrier,
        flush_acks: Callable[[], Awaitable[None]],
    ) -> None:
        self._io = io
        self._node_id = node_id
        self._phase = phase
        self._workers = workers
        self._view = view
        self._retrying = retrying
        self._flush_acks = flush_acks
        self._cell = _metrics.pool_cell(io.pool)
        self._to_place: set[str] = set()
        self._place_ready = anyio.Event()
        self._moved: list[_Moved] = []
        self._moved_ready = anyio.Event()

    def request(self, keys: Iterable[str]) -> None:
        """Have the placement task place ``keys`` (unassigned ones a heartbeat returned)."""
        self._to_place.update(keys)
        self._place_ready.set()

    async def run_placing(self) -> None:
        """The placement task: place what heartbeats found unassigned."""
        while True:
            await self._place_ready.wait()
            self._place_ready = anyio.Event()
            keys, self._to_place = sorted(self._to_place), set()
            await self.place(keys)

    async def place(self, keys: list[str]) -> None:
        """Assign ``keys`` to their owners under the current membership (``pool_place``)."""
        for _ in range(10):
            members = self._view.current
            if not members.workers:
                return
            args: list[str] = []
            for key, target in _routing.assign(keys, members.workers).items():
                assert target is not None
                args += [key, target, members.workers[target]]
            reply = await self._retrying(
                "placing jobs", functools.partial(self._io.run, "place", members.epoch, *args)
            )
            if text(reply[0]) == "ok":
                return
            self._view.update(Membership.from_flat(reply[1:]), from_redis=True)

    def check_placement(self, worker_id: str, key: str, epoch: str) -> None:
        """After a start: move the job if the membership changed while it started (``epoch``:
        the one the start was routed with)."""
        members = self._view.current
        if epoch == members.epoch:
            return
        worker = self._workers.get(worker_id)
        if worker is None:  # removed meanwhile: its removal hands the job over
            return
        target, routed = _routing.route(key, members.worker_set)
        if target is not None and target != worker.id and not worker.removed:
            worker._enqueue(key, _MoveOp(self, worker, key, target, members.epoch, routed))

    async def run_rebalancing(self) -> None:
        """Stop the jobs that routing now gives to other workers, then hand them over."""
        while True:
            await self._view.wait_changed()
            if self._phase.closing or self._phase.fenced or self._phase.shutting_down:
                continue
            members = self._view.current
            if not members.workers:
                continue
            moving = 0
            for worker in list(self._workers.values()):
                # Keys only (strings, which the garbage collector does not track: a list of
                # (key, job) pairs would be 100k tracked tuples, promoted in bulk).
                keys = worker._local_keys()
                router = _routing.Rechecker(worker.id, members.worker_set)
                for first in range(0, len(keys), ROUTE_CHUNK):
                    for key in keys[first : first + ROUTE_CHUNK]:
                        local = worker._local(key)
                        if local is None or local.beats is router.members:
                            continue  # routed with this very membership already
                        target, digest = router.route(key, local.beats, local.digest)
                        if target == worker.id:
                            local.beats, local.digest = router.members, digest
                            continue
                        routed = (router.members, digest) if target is not None else None
                        move = _MoveOp(self, worker, key, target, members.epoch, routed)
                        worker._enqueue(key, move)
                        moving += 1
                    await anyio.lowlevel.checkpoint()
                    if self._view.current is not members:
                        break  # changed again: the next pass routes every key anew
                else:
                    continue
                break
            if moving:
                self._cell.rebalances += 1

    async def _move(
        self,
        worker: Worker,
        key: str,
        target: str | None,
        epoch: str,
        routed: _routing.Routed | None = None,
    ) -> None:
        """Stop ``key`` on ``worker`` and queue it for its new owner, ``target`` under the
        membership of ``epoch`` (routed again if the membership changed since)."""
        local = worker._local(key)
        if local is None or self._phase.closing or self._phase.fenced:
            return
        members = self._view.current
        if members.epoch != epoch:
            target, routed = _routing.route(key, members.worker_set)
            epoch = members.epoch
        if target is None or target == worker.id:
            return
        token, job = local.token, local.job
        # Stop before start (guarantee 3): the job is handed over only once stopped here.
        await worker._stop_locally(key, token)
        self._cell.moved += 1
        self._moved.append(_Moved(worker.id, token, job, target, epoch, routed))
        self._moved_ready.set()

    async def run_releasing(self) -> None:
        """The hand-over task: give moved jobs to their new owners (after their acks), in
        batches of :data:`MOVE_BATCH`."""
        while True:
            await self._moved_ready.wait()
            self._moved_ready = anyio.Event()
            await self._flush_acks()
            moved, self._moved = self._moved, []
            for first in range(0, len(moved), MOVE_BATCH):
                await self._hand_over(moved[first : first + MOVE_BATCH])

    async def _hand_over(self, moved: list[_Moved]) -> None:
        """Move one batch (``pool_move``); start the ones this node's workers now own, and
        place the ones Redis released instead (stale membership, new owner gone)."""
        members = self._view.current
        args: list[str] = []
        for item in moved:
            target = item.target
            if item.epoch != members.epoch:
                target, item.routed = _routing.route(item.job.key, members.worker_set)
            target = target or ""
            node = members.workers.get(target, "")
            args += [item.job.key, item.worker_id, item.token, target, node]
        attempts = 0

        async def call() -> object:
            nonlocal attempts
            attempts += 1
            again = "1" if attempts > 1 else "0"
            return await self._io.run("move", self._node_id, members.epoch, again, *args)

        reply = await self._retrying("moving jobs", call)
        to_place: list[str] = []
        if text(reply[0]) != "ok":
            self._view.update(Membership.from_flat(reply[1:]), from_redis=True)
            to_place = [item.job.key for item in moved]
        else:
            for i, item in enumerate(moved):
                result = text(reply[1 + i])
                if result.startswith("local:"):
                    self._start_here(item, args[5 * i + 3], result, members.epoch)
                elif result == "released":
                    to_place.append(item.job.key)
        if to_place:
            await self.place(to_place)

    def _start_here(self, item: _Moved, worker_id: str, result: str, epoch: str) -> None:
        """Start a moved job on this node's worker ``worker_id`` (taken by ``pool_move``
        with the membership of ``epoch``)."""
        worker = self._workers.get(worker_id)
        if worker is None:  # removed meanwhile: its removal made the job unassigned
            return
        _, token, requeued = result.split(":")
        old = item.job
        job = Job(old.key, old.payload, old.created_at, requeued == "1", old.node_id, worker.id)
        worker._enqueue(job.key, _StartOp(worker, job, token, epoch, item.routed))
