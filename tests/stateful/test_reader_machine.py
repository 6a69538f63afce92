"""Model-based test of readers: two streams, readers opened at random starts (newest,
oldest, an id, a datetime), a second stream added to some, connections killed at random.

Invariant, after every step: every open reader has seen exactly the model's events after its
start in each of its streams, in stream order, with no duplicates, and its statistics agree
(events delivered, nothing skipped, the cursor at the last event seen).
"""

from __future__ import annotations

import functools
from concurrent.futures import Future
from typing import Any

import anyio
import attrs
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from pulse_trio.streaming import NEWEST, OLDEST, Event, Reader, Stream
from pulse_trio.streaming._event import id_key, id_to_datetime

from .._admin import AdminClient
from .._util import lent_connections
from ._harness import Entered, PortalMachine, run_machine

MAX_SEQ = 2**64 - 1
MAX_READERS = 3
STARTS = st.sampled_from(["newest", "oldest", "id", "datetime"])


@attrs.define
class _OpenReader:
    """A reader the machine opened, with what it must see."""

    entered: Entered[Reader]
    consumer: Future[None]
    events: list[Event]
    after: dict[int, tuple[int, int]]  # stream index -> read strictly after this (ms, seq)

    @property
    def reader(self) -> Reader:
        return self.entered.value


class ReaderMachine(PortalMachine):
    """Two streams and up to three readers vs a model of what each stream holds."""

    def __init__(self) -> None:
        super().__init__()
        self.client = AdminClient.of(self.client)  # the same connections, with test helpers
        self.streams = [Stream(self.client, f"{self.prefix}-{i}", max_len=0) for i in range(2)]
        self.model: list[list[tuple[str, str]]] = [[], []]  # per stream: (id, event name)
        self.readers: list[_OpenReader] = []
        self.counter = 0

    # -- helpers

    def _position(self, index: int, kind: str, pick: int) -> tuple[Any, tuple[int, int]]:
        """A start position for stream ``index`` and the (ms, seq) the reader reads after."""
        entries = self.model[index]
        if kind == "newest" or (kind in ("id", "datetime") and not entries):
            return NEWEST, id_key(entries[-1][0]) if entries else (0, 0)
        if kind == "oldest":
            return OLDEST, (0, 0)
        event_id = entries[pick % len(entries)][0]
        if kind == "id":
            return event_id, id_key(event_id)
        ms = id_key(event_id)[0]
        return id_to_datetime(event_id), (ms - 1, MAX_SEQ)

    def _close(self, handle: _OpenReader) -> None:
        handle.consumer.cancel()
        handle.entered.leave()

    def _expected(self, handle: _OpenReader, index: int) -> list[str]:
        after = handle.after[index]
        return [name for eid, name in self.model[index] if id_key(eid) > after]

    def _observed(self, handle: _OpenReader, index: int) -> list[str]:
        name = self.streams[index].name
        return [e.event_name for e in list(handle.events) if e.stream_name == name]

    # -- rules

    @rule(index=st.integers(0, 1), count=st.integers(1, 8), batch=st.booleans())
    def add_events(self, index: int, count: int, batch: bool) -> None:
        names = [f"e{self.counter + i}" for i in range(count)]
        self.counter += count
        stream = self.streams[index]
        if batch:
            ids = self.call(stream.add_many, [(n, b"") for n in names])
        else:
            ids = []
            for n in names:
                event_id = self.call(stream.add, n, b"")
                assert event_id is not None
                ids.append(event_id)
        self.model[index].extend(zip(ids, names, strict=True))
        note(f"added {names} to stream {index}")

    @precondition(lambda self: len(self.readers) < MAX_READERS)
    @rule(
        index=st.integers(0, 1),
        kind=STARTS,
        pick=st.integers(0, 50),
        other=st.none() | STARTS,
        block=st.sampled_from([0.05, 10.0]),
    )
    def open_reader(
        self, index: int, kind: str, pick: int, other: str | None, block: float
    ) -> None:
        start, after = self._position(index, kind, pick)
        entered = self.enter(self.streams[index].open_reader(start=start, block=block))
        reader = entered.value
        afters = {index: after}
        if other is not None:
            other_start, other_after = self._position(1 - index, other, pick + 1)
            self.call(reader.add_stream, self.streams[1 - index], other_start)
            afters[1 - index] = other_after
        events: list[Event] = []

        async def consume() -> None:
            async for event in reader:
                events.append(event)

        consumer = self.portal.start_task_soon(consume)
        self.readers.append(_OpenReader(entered, consumer, events, afters))
        note(f"opened reader {len(self.readers) - 1} on {index} at {kind}, other={other}")

    @precondition(lambda self: bool(self.readers))
    @rule(which=st.integers(0, MAX_READERS - 1))
    def close_reader(self, which: int) -> None:
        handle = self.readers.pop(which % len(self.readers))
        self._close(handle)
        note(f"closed reader {which % (len(self.readers) + 1)}")

    @rule()
    def kill_connections(self) -> None:  # type: ignore[override]
        self.call(functools.partial(self.client.client_kill, type_="normal", skipme=True))
        note("killed every normal connection")

    # -- teardown

    def teardown(self) -> None:
        try:
            while self.readers:
                self._close(self.readers.pop())
            # Killed connections and cancelled reads included: each went back, or was closed.
            assert lent_connections(self.client) == 0
        finally:
            super().teardown()

    # -- invariant

    @invariant()
    def readers_see_exactly_the_model(self) -> None:
        async def settle() -> None:
            with anyio.move_on_after(5):
                while not all(
                    self._observed(h, i) == self._expected(h, i)
                    for h in self.readers
                    for i in h.after
                ):
                    for h in self.readers:
                        for i in h.after:
                            observed, expected = self._observed(h, i), self._expected(h, i)
                            assert observed == expected[: len(observed)], (observed, expected)
                    await anyio.sleep(0.005)

        self.call(settle)
        for handle in self.readers:
            assert set(handle.reader.streams) == {self.streams[i].name for i in handle.after}
            for index in handle.after:
                assert self._observed(handle, index) == self._expected(handle, index)
            self.call(self._check_statistics, handle)

    def _check_statistics(self, handle: _OpenReader) -> None:
        """In the loop (the consumer cannot run meanwhile): the counters match the events."""
        stats = handle.reader.statistics()
        assert stats.delivered == len(handle.events) + stats.buffered, (stats, handle.events)
        assert stats.skipped == 0
        for event in handle.events:  # in order: the last one per stream wins
            assert id_key(stats.cursors[event.stream_name]) >= id_key(event.id)
        last = {event.stream_name: event.id for event in handle.events}
        if stats.buffered == 0:
            for name, event_id in last.items():
                assert stats.cursors[name] == event_id, (stats.cursors, last)


def test_reader_state_machine(server_url: str, anyio_backend: Any) -> None:
    run_machine(ReaderMachine, server_url, anyio_backend, max_examples=20, steps=20)
