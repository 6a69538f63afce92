"""The local copy of a replicated map, and who waits on it (no I/O).

:class:`Replica` holds what a process knows of the map: its content, its revision, the
:meth:`Map.subscribe` blocks to notify and the :meth:`Map.set_and_wait` callers to wake.

Who mutates what: only the map's synchronizer (:mod:`._sync`: the map's one background task,
or its subscription handler in the subscriber connection's reader task while that task waits)
calls :meth:`Replica.apply` and :meth:`Replica.load`; writers never touch the copy, their
writes come back through the subscription like everybody else's. The content dict is mutated
in place, never replaced, so that the map's reads hold a direct reference to it (a local read
is one dict lookup).
"""

from __future__ import annotations

import contextlib
import logging
import time

import anyio
import attrs

from .. import _metrics
from ._protocol import KIND_FIELD, REV_FIELD, EventKind, Message, MessageKind
from ._subscription import Subscription


@attrs.define
class _Waiter:
    revision: int
    syncs_started: int
    event: anyio.Event = attrs.field(factory=anyio.Event)


class Replica:
    """A map's local content and revision, its subscribers and its write waiters."""

    def __init__(self, name: str, logger: logging.Logger) -> None:
        self.name = name
        self._log = logger
        #: The local content (mutated in place by :meth:`apply` and :meth:`load` only).
        self.content: dict[str, str] = {}
        #: The revision of the local content (0 before the first write to the map).
        self.revision = 0
        self.subscriptions: set[Subscription] = set()
        self.waiters: list[_Waiter] = []
        #: Snapshots started (a waiter from before a snapshot is released by its end).
        self.syncs_started = 0
        #: Snapshots loaded (the first one included).
        self.resyncs = 0
        #: Notifications applied.
        self.applied = 0
        #: Metrics: revision of a ``set`` of this process -> when it was called.
        self.lag_marks: dict[int, float] = {}

    # ----------------------------------------------------------------- written by the sync

    def apply(self, message: Message) -> None:
        """Apply one notification (its revision was checked by the caller)."""
        self.revision = message.revision
        if self.lag_marks:
            self._record_lag()
        key = message.key
        if message.kind is MessageKind.SET:
            assert key is not None
            assert message.value is not None
            if key not in (REV_FIELD, KIND_FIELD):
                self.content[key] = message.value
        elif message.kind is MessageKind.DEL:
            assert key is not None
            self.content.pop(key, None)
        else:
            self.content.clear()
        self.applied += 1
        self._log.debug(
            "rmap %s: applied %s rev %d",
            self.name,
            message.kind.value,
            message.revision,
            extra={"map": self.name, "op": message.kind.value, "revision": message.revision},
        )
        self.notify(message.event_kind)
        self.release_waiters()

    def begin_sync(self) -> None:
        """Count a snapshot about to be read (see :meth:`wait_for`)."""
        self.syncs_started += 1

    def load(self, content: dict[str, str], revision: int, stored_kind: str | None) -> None:
        """Replace the local content with a snapshot of the hash, and notify what changed."""
        old = self.content
        kind: EventKind | None = None
        if content != old:
            kind = EventKind.DELETE if old.keys() - content.keys() else EventKind.CHANGE
        if revision > self.revision and stored_kind in ("reset", "destroy"):
            kind = EventKind.RESET
        old.clear()
        old.update(content)
        self.revision = revision
        self.resyncs += 1
        if self.lag_marks:
            self._record_lag()
        if kind is not None:
            self.notify(kind)
        self.release_waiters()

    def mark_write(self, revision: int, began: float) -> None:
        """Metrics: this process's ``set`` called at ``began`` (``time.perf_counter()``)
        wrote ``revision``; record the lag once the replica reflects it."""
        self.lag_marks[revision] = began
        if revision <= self.revision:
            self._record_lag()
        elif len(self.lag_marks) > _metrics.MAX_LAG_MARKS:
            self.lag_marks.clear()  # not applying (disconnected): nothing to measure

    def _record_lag(self) -> None:
        histogram = _metrics.replica_lag
        now = time.perf_counter()
        for revision in [r for r in self.lag_marks if r <= self.revision]:
            began = self.lag_marks.pop(revision)
            if histogram is not None:
                histogram.record(now - began, {"pulse_trio.map.name": self.name})

    # ----------------------------------------------------------------- readers and waiters

    def notify(self, kind: EventKind) -> None:
        """Give ``kind`` to every open subscription (each coalesces on its own)."""
        for subscription in self.subscriptions:
            subscription._notify(kind)

    def release_waiters(self) -> None:
        """Wake the waiters whose revision is reached or whose snapshot came after them."""
        for waiter in self.waiters:
            if waiter.revision <= self.revision or waiter.syncs_started < self.syncs_started:
                waiter.event.set()

    async def wait_for(self, revision: int) -> bool:
        """Wait until the local copy reached ``revision`` or was re-read after this call.

        Returns:
            ``False`` if woken by :meth:`release_all` without either (the map was left).
        """
        if self.revision >= revision:
            return True
        waiter = _Waiter(revision, self.syncs_started)
        self.waiters.append(waiter)
        try:
            await waiter.event.wait()
        finally:
            with contextlib.suppress(ValueError):
                self.waiters.remove(waiter)
        return self.revision >= revision or waiter.syncs_started != self.syncs_started

    def release_all(self) -> None:
        """End every subscription and wake every waiter (the map is being left)."""
        for subscription in list(self.subscriptions):
            subscription._close()
        for waiter in self.waiters:
            waiter.event.set()
