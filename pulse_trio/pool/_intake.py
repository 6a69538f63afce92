"""The node's intake: one task reads the node's own stream and acts on each message.

A node's stream carries starts for its workers (taken in one ``pool_take`` call per read,
then handed to each worker's key queue), stops and notifications for them, replies to its
callers, membership changes and the pool's shutdown. The reader keeps its cursor and sets the
trim mark that the node's next script sends (nothing read is trimmed before it was read;
reference §12 #21). A malformed entry is counted, logged and skipped. Starts read while the
node is fenced are handed to liveness (``_liveness.py``), which takes them after recovery.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping

from .._boundary import text
from ..streaming._options import block_ms
from ._node_state import BATCH, Counters, MembershipView, Phase, Retrier, TrimMark, Waiters
from ._protocol import (
    Job,
    MalformedMessageError,
    Membership,
    Message,
    decode_message,
    ms_to_datetime,
    next_id,
    reply_spec,
)
from ._redis import PoolRedis
from ._worker import Worker

#: Longest block of the node stream's XREAD, in ms (cancellation is immediate anyway).
READ_BLOCK_MS = 1000

#: Queue an outcome for the acknowledgement batches (``AckBatcher.ack``).
Ack = Callable[..., None]


class Intake:
    """Reads the node's stream, takes starts, routes the other messages."""

    def __init__(
        self,
        *,
        io: PoolRedis,
        node_id: str,
        pool: str,
        client_only: bool,
        logger: logging.Logger,
        phase: Phase,
        workers: Mapping[str, Worker],
        view: MembershipView,
        trim: TrimMark,
        waiters: Waiters,
        counters: Counters,
        retrying: Retrier,
        ack: Ack,
        defer: Callable[[list[Message]], None],
        wake_heartbeat: Callable[[], None],
        on_shutdown: Callable[[], None],
    ) -> None:
        self._io = io
        self._node_id = node_id
        self._pool = pool
        self._client_only = client_only
        self._logger = logger
        self._phase = phase
        self._workers = workers
        self._view = view
        self._trim = trim
        self._waiters = waiters
        self._counters = counters
        self._retrying = retrying
        self._ack = ack
        self._defer = defer
        self._wake_heartbeat = wake_heartbeat
        self._on_shutdown = on_shutdown
        #: The node stream's XREAD block.
        self._block_ms = block_ms(READ_BLOCK_MS / 1000)
        #: The id of the last entry read.
        self.cursor = "0-0"

    async def run(self) -> None:
        """Read this node's stream (one blocking connection) and act on each message."""
        while True:
            entries = await self._retrying(
                "reading the node stream",
                lambda: self._io.read(
                    self._node_id, self.cursor, count=BATCH, block_ms=self._block_ms
                ),
            )
            if not entries:
                continue
            self.cursor = entries[-1][0]
            self._trim.below = next_id(self.cursor)
            starts: list[Message] = []
            for entry_id, fields in entries:
                try:
                    message = decode_message(entry_id, fields)
                except MalformedMessageError as exc:
                    self._counters.malformed += 1
                    self._logger.error(
                        "pool %s: node %s: %s (skipped)", self._pool, self._node_id, exc
                    )
                    continue
                if message.type == "s":
                    starts.append(message)
                    continue
                if starts:
                    await self.take(starts)
                    starts = []
                self._handle(message)
            if starts:
                await self.take(starts)

    def _handle(self, message: Message) -> None:
        f = message.fields
        if message.type == "r":
            self._waiters.resolve(f["d"], f["o"] == "1", f.get("e", ""))
        elif message.type == "m":
            self._view.update(Membership.from_message(f["M"]))
            self._wake_heartbeat()
        elif message.type == "q":
            self._on_shutdown()
        elif message.type in ("x", "n"):
            worker = self._workers.get(f["w"])
            reply = reply_spec(f["d"], f["r"])
            if worker is None:
                # Not ours any more (removed): answer so the caller does not wait.
                kind = message.type
                self._ack(kind, f["k"], f["w"], f["g"], None if kind == "x" else "no worker", reply)
                return
            key, token, payload = f["k"], f["g"], message.payload
            if message.type == "x":
                worker._enqueue(key, lambda: worker._stop_job(key, token, reply))
            else:
                worker._enqueue(key, lambda: worker._notify(key, token, payload, reply))

    async def take(self, starts: list[Message]) -> None:
        """Take a batch of starts in one script call, then start the taken ones."""
        if self._client_only or self._phase.closing or self._phase.shutting_down:
            return
        if self._phase.fenced:
            # Not now (the lease lapsed), but not dropped either: recovery's register may
            # already have run and another node placed a job on our worker, a start valid
            # after recovery. Recovery takes them all; the ones its remove made obsolete
            # (every start assigned before it) come back 'stale' from pool_take.
            self._defer(starts)
            return
        args: list[str] = []
        for m in starts:
            args += [m.fields["k"], m.fields["w"], m.fields["g"]]
        statuses = await self._retrying(
            "taking starts",
            lambda: self._io.run("take", self._node_id, self._trim.take(), *args),
        )
        for message, status in zip(starts, statuses, strict=True):
            f = message.fields
            worker = self._workers.get(f["w"])
            if worker is None:
                continue
            state = text(status)
            key, token = f["k"], f["g"]
            if state == "stale":
                continue
            if state == "dup":
                local = worker._local(key)
                if local is not None:
                    if local.running:
                        self._ack("s", key, worker.id, token, None)
                    continue
                # Taken for this worker and never started here: an earlier attempt of this
                # very call ran in Redis but its reply was lost. Start it now, or nobody will.
            job = Job(
                key=key,
                payload=message.payload,
                created_at=ms_to_datetime(int(f["c"])),
                requeued=f["q"] == "1",
                node_id=f["o"],
                worker_id=worker.id,
            )
            worker._enqueue(key, functools.partial(worker._start_job, job, token, f.get("E", "")))
