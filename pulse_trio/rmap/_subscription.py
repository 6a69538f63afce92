"""Change notifications of one :meth:`Map.subscribe` block, coalesced (no I/O).

A subscriber that falls behind keeps one pending notification, the strongest kind it missed
(RESET > DELETE > CHANGE), never a queue of older, weaker ones: the map is already up to date
when a notification is received, so only "what kind of change happened since you last looked"
is worth keeping.
"""

from __future__ import annotations

import anyio

from ._protocol import EventKind


class Subscription:
    """Change notifications of one :meth:`Map.subscribe` block.

    Iterate it to receive :class:`EventKind` values. Notifications are coalesced: while the
    consumer is busy, at most one is kept, the strongest missed (RESET > DELETE > CHANGE). The
    map is always already up to date when a notification is received: re-read what you need.
    Iteration ends when the map is left.
    """

    def __init__(self) -> None:
        self._pending: EventKind | None = None
        # Made only when the consumer has to wait (most notifications find it busy or find
        # one already pending), set and dropped by the next notification.
        self._wakeup: anyio.Event | None = None
        self._closed = False

    def _notify(self, kind: EventKind) -> None:
        if self._pending is None or kind > self._pending:
            self._pending = kind
        self._wake()

    def _close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()

    @property
    def pending(self) -> EventKind | None:
        """The notification waiting to be received, if any."""
        return self._pending

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> EventKind:
        while self._pending is None:
            if self._closed:
                raise StopAsyncIteration
            if self._wakeup is None:
                self._wakeup = anyio.Event()
            await self._wakeup.wait()
        kind, self._pending = self._pending, None
        return kind
