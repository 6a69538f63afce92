"""A node's placement: assigning unassigned jobs, rebalancing, moving and releasing jobs.

Placement routes keys with the membership the node knows (``_routing.py``, pure) and assigns
them with ``pool_place``, which checks the epoch (a stale view is answered with the current
membership and the node routes again). When the membership changes, the rebalance task finds
the jobs of this node's workers that routing now gives to another worker and moves each one,
in its key's queue: **stop before start** (guarantee 3), the job is stopped here and only
then released (``pool_release``) and placed for its new owner. A job whose start finished
after the membership changed is checked the same way (:meth:`Placement.check_placement`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping

import anyio

from .. import _metrics
from .._boundary import text
from . import _routing
from ._node_state import MembershipView, Phase, Retrier
from ._protocol import Membership
from ._redis import PoolRedis
from ._worker import Worker


class Placement:
    """Places unassigned jobs and moves this node's jobs when routing changes."""

    def __init__(
        self,
        *,
        io: PoolRedis,
        phase: Phase,
        workers: Mapping[str, Worker],
        view: MembershipView,
        retrying: Retrier,
        flush_acks: Callable[[], Awaitable[None]],
    ) -> None:
        self._io = io
        self._phase = phase
        self._workers = workers
        self._view = view
        self._retrying = retrying
        self._flush_acks = flush_acks
        self._cell = _metrics.pool_cell(io.pool)
        self._to_place: set[str] = set()
        self._place_ready = anyio.Event()
        self._released: dict[str, set[str]] = {}
        self._release_ready = anyio.Event()

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
            for key in keys:
                target = _routing.owner(key, members.workers)
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
        if epoch == self._view.current.epoch:
            return
        worker = self._workers.get(worker_id)
        if worker is None:  # removed meanwhile: its removal hands the job over
            return
        target = _routing.owner(key, self._view.current.workers)
        if target is not None and target != worker.id and not worker.removed:
            worker._enqueue(key, lambda: self._move(worker, key))

    async def run_rebalancing(self) -> None:
        """Stop the jobs that routing now gives to other workers, then release them."""
        while True:
            await self._view.wait_changed()
            if self._phase.closing or self._phase.fenced or self._phase.shutting_down:
                continue
            workers = self._view.current.workers
            if not workers:
                continue
            moving = 0
            for worker in list(self._workers.values()):
                placement = {key: worker.id for key in worker._local_keys()}
                for key in _routing.moves(placement, workers):
                    worker._enqueue(key, functools.partial(self._move, worker, key))
                    moving += 1
            if moving:
                self._cell.rebalances += 1

    async def _move(self, worker: Worker, key: str) -> None:
        local = worker._local(key)
        if local is None or self._phase.closing or self._phase.fenced:
            return
        target = _routing.owner(key, self._view.current.workers)
        if target is None or target == worker.id:
            return
        token = local.token
        # Stop before start (guarantee 3): the job is released only once stopped here.
        await worker._stop_locally(key, token)
        self._cell.moved += 1
        self._released.setdefault(worker.id, set()).add(f"{key}\0{token}")
        self._release_ready.set()

    async def run_releasing(self) -> None:
        """The release task: hand moved jobs back to Redis (after their acks), then place them."""
        while True:
            await self._release_ready.wait()
            self._release_ready = anyio.Event()
            await self._flush_acks()
            released, self._released = self._released, {}
            keys: list[str] = []
            for worker_id, items in released.items():
                args: list[str] = []
                for item in items:
                    key, _, token = item.partition("\0")
                    args += [key, token]
                    keys.append(key)
                await self._retrying(
                    "releasing jobs", functools.partial(self._io.run, "release", worker_id, *args)
                )
            if keys:
                await self.place(keys)
