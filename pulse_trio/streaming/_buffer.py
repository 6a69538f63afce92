"""The events a reader or sink instance has read and its iteration has not taken yet.

A bounded first-in first-out queue between the read loops (:meth:`EventBuffer.put`) and the
user's ``async for`` (:meth:`EventBuffer.take`), shaped by what each event costs on the hot
path, where a task switch costs as much as the rest of the event's handling:

- **take** returns a buffered event at once, without yielding to the scheduler, except
  every :data:`YIELD_EVERY`-th event in a row: a consumer that awaits something real per
  event (an acknowledgement) yields there anyway, and one that awaits nothing still lets the
  other tasks run (and sees a cancellation) every few events;
- **put** into a full buffer waits until the iteration has taken half of it: the read loop
  is woken once per half buffer, not once per event taken.
"""

from __future__ import annotations

from collections import deque

import anyio
import anyio.lowlevel

from ._event import Event

#: Events :meth:`EventBuffer.take` returns in a row without a checkpoint.
YIELD_EVERY = 16


class EventBuffer:
    """A bounded FIFO of events; see the module's docstring.

    Any number of tasks may put (one read loop per stream of a sink) and take (several
    consumers of one instance). Once :meth:`close` is called, both sides raise: takers
    :class:`anyio.EndOfStream` (events still buffered are dropped: a reader's are read again
    by nobody, a sink's stay pending and are redelivered), putters
    :class:`anyio.ClosedResourceError`.
    """

    __slots__ = ("_closed", "_events", "_low", "_ready", "_room", "_size", "_streak")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"an event buffer holds at least one event, not {size}")
        self._size = size
        #: A waiting putter is woken when the buffer holds this many events or fewer.
        self._low = size // 2
        self._events: deque[Event] = deque()
        self._ready: anyio.Event | None = None  # set when an event arrives (takers wait)
        self._room: anyio.Event | None = None  # set when the buffer drained (putters wait)
        self._streak = 0
        self._closed = False

    def __len__(self) -> int:
        return len(self._events)

    @property
    def free(self) -> int:
        """How many more events fit before :meth:`put` waits."""
        return self._size - len(self._events)

    async def put(self, event: Event) -> None:
        """Append ``event``; without a checkpoint while there is room (the caller yields
        once after its batch), else after waiting for the iteration to take half.

        Raises:
            anyio.ClosedResourceError: The buffer is closed.
        """
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            if len(self._events) < self._size:
                break
            room = self._room
            if room is None:
                room = self._room = anyio.Event()
            await room.wait()
        self._events.append(event)
        ready = self._ready
        if ready is not None:
            self._ready = None
            ready.set()

    async def take(self) -> Event:
        """Remove and return the oldest event, waiting for one if there is none.

        Raises:
            anyio.EndOfStream: The buffer is closed.
        """
        events = self._events
        if events and self._streak < YIELD_EVERY and not self._closed:
            self._streak += 1
        else:
            self._streak = 0
            await anyio.lowlevel.checkpoint()
            while not events or self._closed:
                if self._closed:
                    raise anyio.EndOfStream
                ready = self._ready
                if ready is None:
                    ready = self._ready = anyio.Event()
                await ready.wait()
        event = events.popleft()
        room = self._room
        if room is not None and len(events) <= self._low:
            self._room = None
            room.set()
        return event

    def close(self) -> None:
        """End both sides: waiting takers and putters wake up and raise."""
        self._closed = True
        self._events.clear()
        for wake in (self._ready, self._room):
            if wake is not None:
                wake.set()
        self._ready = self._room = None
