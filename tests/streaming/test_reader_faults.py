"""Readers under faults: killed connections, server restarts and outages, wrong-type keys."""

from __future__ import annotations

import functools
import gc
import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import anyio
import attrs
import pytest
from anyio.from_thread import BlockingPortal
from coredis.response._callbacks import NoopCallback
from coredis.tokens import PureToken
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import pulse_trio
from pulse_trio.streaming import NEWEST, OLDEST, Event, Reader, Stream, StreamError
from pulse_trio.streaming._event import id_key, id_to_datetime
from pulse_trio.testing import EmbeddedServer

from .conftest import collecting, names, wait_count, wait_until, wait_until_async

pytestmark = pytest.mark.anyio

#: coredis 6.9 wart: a connection whose connect() fails (server down) never closes the memory
#: streams it created in its constructor, and their ``__del__`` warns. Tests that take the
#: server down see those warnings; the reader's own buffers are always closed.
#: Such tests collect the garbage before they end, so that no later test sees the warnings.
coredis_unclosed_buffers = (
    pytest.mark.filterwarnings(
        r"ignore:Exception ignored in. <function MemoryObject\w+Stream.__del__"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
    pytest.mark.usefixtures("collect_garbage"),
)


@pytest.fixture
def collect_garbage() -> Iterator[None]:
    """Run the garbage collector when the test ends (under the test's warning filters).

    coredis logs failed connects with their tracebacks; captured log records would keep those
    (and the unclosed buffers) alive past the collection, so coredis is quietened meanwhile.
    """
    coredis_logger = logging.getLogger("coredis")
    level = coredis_logger.level
    coredis_logger.setLevel(logging.CRITICAL)
    try:
        yield
        gc.collect()
    finally:
        coredis_logger.setLevel(level)


Client = Any


async def xread_client_ids(client: Client) -> list[int]:
    """Server-side ids of the connections currently running XREAD."""
    return [int(c["id"]) for c in await client.client_list() if c.get("cmd") == "xread"]


async def wait_blocked(client: Client) -> list[int]:
    """Wait until some connection blocks in XREAD; return the ids of those that do."""
    found: list[int] = []

    async def blocked() -> bool:
        found[:] = await xread_client_ids(client)
        return bool(found)

    await wait_until_async(blocked, what="a reader blocks in XREAD")
    return found


async def test_killed_reader_connection_reconnects_without_loss_or_dup(
    client: Client, unique: str
) -> None:
    stream = Stream(client, unique)
    async with stream.open_reader(block=10) as reader, collecting(reader) as events:
        for round_ in range(3):
            [victim] = await wait_blocked(client)
            assert await client.client_kill(identifier=victim)
            await stream.add_many([(f"{round_}-{i}", b"") for i in range(10)])
            await wait_count(events, 10 * (round_ + 1))
            await wait_until_async(
                functools.partial(_has_new_xread, client, victim), what="the reader re-blocks"
            )
    assert names(events) == [f"{r}-{i}" for r in range(3) for i in range(10)]


async def _has_new_xread(client: Client, old: int) -> bool:
    ids = await xread_client_ids(client)
    return bool(ids) and old not in ids


async def test_client_kill_type_normal_while_adding(client: Client, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_reader(block=0.05) as reader, collecting(reader) as events:
        for i in range(60):
            await stream.add(str(i), b"")
            if i % 20 == 10:
                await client.client_kill(type_=PureToken.NORMAL, skipme=True)
        await wait_count(events, 60)
    assert names(events) == [str(i) for i in range(60)]


@coredis_unclosed_buffers[0]
@coredis_unclosed_buffers[1]
async def test_restart_mid_stream_no_loss_no_dup(own_server: EmbeddedServer, unique: str) -> None:
    async with pulse_trio.connect(own_server.url) as client:
        stream = Stream(client, unique)
        # A small buffer and no consumer for now: the reader's cursor lags behind the stream
        # when the server goes down, so the restart happens mid-way through its reading.
        async with stream.open_reader(block=0.05, buffer_size=5, max_polled=5) as reader:
            await stream.add_many([(f"a{i}", b"") for i in range(50)])
            await own_server.restart()
            await stream.add_many([(f"b{i}", b"") for i in range(50)])
            async with collecting(reader) as events:
                await wait_count(events, 100, within=10)
                await stream.add("end", b"")
                await wait_count(events, 101)
    expected = [f"a{i}" for i in range(50)] + [f"b{i}" for i in range(50)] + ["end"]
    assert names(events) == expected


@coredis_unclosed_buffers[0]
@coredis_unclosed_buffers[1]
async def test_loading_replies_are_retried(unique: str, caplog: pytest.LogCaptureFixture) -> None:
    """While the server loads its data it answers ``LOADING``: a transient error, retried."""
    caplog.set_level(logging.WARNING, logger="pulse_trio.streaming")
    # key-load-delay slows loading to ~0.5 s (500 us per key) and the small interval lets the
    # server answer other clients (with LOADING) meanwhile; DEBUG RELOAD saves and reloads.
    server = EmbeddedServer(
        extra_args=[
            "--key-load-delay", "500",
            "--loading-process-events-interval-bytes", "1024",
            "--enable-debug-command", "yes",
        ]
    )  # fmt: skip
    async with (
        server,
        pulse_trio.connect(server.url) as client,
        pulse_trio.connect(server.url) as observer,
    ):
        await client.mset({f"{unique}:filler:{i}": "x" for i in range(1000)})
        stream = Stream(client, unique, max_len=0)
        await stream.add_many([(str(i), b"") for i in range(300)])

        async def debug_reload() -> None:  # from the other client: this one's connection
            # would queue the reader's next XREAD behind the reload
            await observer.create_request(b"DEBUG", b"RELOAD", callback=NoopCallback())

        async def loading() -> bool:
            info = await client.info("persistence")
            return bool(info.get("loading"))

        # One event per XREAD and a one-event buffer: the reader waits to hand over its second
        # event; once the server is loading, consuming makes it send XREADs, answered LOADING.
        async with (
            stream.open_reader(start=OLDEST, block=0.05, max_polled=1, buffer_size=1) as reader,
            anyio.create_task_group() as tg,
        ):
            await wait_until(lambda: reader.cursors()[unique] != "0-0")
            tg.start_soon(debug_reload)
            await wait_until_async(loading, what="the server is loading")
            async with collecting(reader) as events:
                await wait_count(events, 300, within=10)
    assert names(events) == [str(i) for i in range(300)]
    assert any("BusyLoadingError" in r.getMessage() for r in caplog.records)


@coredis_unclosed_buffers[0]
@coredis_unclosed_buffers[1]
async def test_outage_is_retried_with_backoff_not_a_hot_loop(
    own_server: EmbeddedServer, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pulse_trio.streaming")
    async with pulse_trio.connect(own_server.url) as client:
        stream = Stream(client, unique)
        async with stream.open_reader(block=0.05) as reader, collecting(reader) as events:
            await stream.add("before", b"")
            await wait_count(events, 1)
            caplog.clear()
            await own_server.restart(down_for=1.0)
            retries = [r for r in caplog.records if "retry" in r.getMessage()]
            await stream.add("after", b"")
            await wait_count(events, 2, within=10)
            assert reader.statistics().retries >= len(retries)
    # Jittered exponential backoff from 50 ms: a handful of attempts in 1 s, not hundreds.
    assert 1 <= len(retries) <= 12, [r.getMessage() for r in retries]
    assert names(events) == ["before", "after"]


async def test_wrong_type_while_reading_raises_out_of_the_block(
    client: Client, unique: str
) -> None:
    stream = Stream(client, unique)
    await stream.add("e", b"")
    with pytest.RaisesGroup(pytest.RaisesExc(StreamError, match=f"pulse:stream:{unique}")):
        async with stream.open_reader(start=OLDEST, block=0.05) as reader:
            assert (await reader.__anext__()).event_name == "e"
            await client.delete([stream.key])
            await client.set(stream.key, "now a string")
            await anyio.sleep(5)  # cancelled by the reader's failure
    assert reader.closed


async def test_wrong_type_of_an_added_stream(client: Client, unique: str) -> None:
    stream, other = Stream(client, unique), Stream(client, unique + "-o")
    await client.set(other.key, "x")
    async with stream.open_reader(block=0.05) as reader:
        with pytest.raises(StreamError, match=other.key):
            await reader.add_stream(other)
        assert reader.streams == (unique,)


# --- state machine -------------------------------------------------------------------------

MAX_SEQ = 2**64 - 1


@attrs.define
class _OpenReader:
    """A reader the state machine opened, with what it must see."""

    context: Any  # the portal-wrapped context manager
    reader: Reader
    consumer: Future[None]
    events: list[Event]
    after: dict[int, tuple[int, int]]  # stream index -> read strictly after this (ms, seq)


class ReaderMachine(RuleBasedStateMachine):
    """Two streams, readers opened at random starts, connections killed; Redis vs a model.

    Invariant: every open reader has seen exactly the model's events after its start in each
    of its streams, in stream order, with no duplicates.
    """

    portal: BlockingPortal
    url: str

    def __init__(self) -> None:
        super().__init__()
        prefix = "sm" + uuid.uuid4().hex[:8]
        self.client_context = self.portal.wrap_async_context_manager(pulse_trio.connect(self.url))
        self.client = self.client_context.__enter__()
        self.streams = [Stream(self.client, f"{prefix}-{i}", max_len=0) for i in range(2)]
        self.model: list[list[tuple[str, str]]] = [[], []]  # per stream: (id, event name)
        self.readers: list[_OpenReader] = []
        self.counter = 0

    def teardown(self) -> None:
        for handle in self.readers:
            self._close(handle)
        self.client_context.__exit__(None, None, None)

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
        handle.context.__exit__(None, None, None)

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
            ids = self.portal.call(stream.add_many, [(n, b"") for n in names])
        else:
            ids = []
            for n in names:
                event_id = self.portal.call(stream.add, n, b"")
                assert event_id is not None
                ids.append(event_id)
        self.model[index].extend(zip(ids, names, strict=True))
        note(f"added {names} to stream {index}")

    @precondition(lambda self: len(self.readers) < 3)
    @rule(
        index=st.integers(0, 1),
        kind=st.sampled_from(["newest", "oldest", "id", "datetime"]),
        pick=st.integers(0, 50),
        other=st.none() | st.sampled_from(["newest", "oldest", "id", "datetime"]),
        block=st.sampled_from([0.05, 10.0]),
    )
    def open_reader(
        self, index: int, kind: str, pick: int, other: str | None, block: float
    ) -> None:
        start, after = self._position(index, kind, pick)
        context = self.portal.wrap_async_context_manager(
            self.streams[index].open_reader(start=start, block=block)
        )
        reader = context.__enter__()
        afters = {index: after}
        if other is not None:
            other_start, other_after = self._position(1 - index, other, pick + 1)
            self.portal.call(reader.add_stream, self.streams[1 - index], other_start)
            afters[1 - index] = other_after
        events: list[Event] = []

        async def consume() -> None:
            async for event in reader:
                events.append(event)

        consumer = self.portal.start_task_soon(consume)
        self.readers.append(_OpenReader(context, reader, consumer, events, afters))
        note(f"opened reader {len(self.readers) - 1} on {index} at {kind}, other={other}")

    @precondition(lambda self: bool(self.readers))
    @rule(which=st.integers(0, 2))
    def close_reader(self, which: int) -> None:
        handle = self.readers.pop(which % len(self.readers))
        self._close(handle)
        note(f"closed reader {which % (len(self.readers) + 1)}")

    @rule()
    def kill_connections(self) -> None:
        self.portal.call(
            functools.partial(self.client.client_kill, type_=PureToken.NORMAL, skipme=True)
        )
        note("killed every normal connection")

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

        self.portal.call(settle)
        for handle in self.readers:
            assert set(handle.reader.streams) == {self.streams[i].name for i in handle.after}
            for index in handle.after:
                assert self._observed(handle, index) == self._expected(handle, index)


@pytest.mark.usefixtures("collect_garbage")
def test_reader_state_machine(server_url: str, anyio_backend: Any) -> None:
    backend, options = (
        (anyio_backend, {}) if isinstance(anyio_backend, str) else tuple(anyio_backend)
    )
    with anyio.from_thread.start_blocking_portal(backend, options) as portal:
        ReaderMachine.portal = portal
        ReaderMachine.url = server_url
        run_state_machine_as_test(
            ReaderMachine,
            settings=settings(
                max_examples=20,
                stateful_step_count=20,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )


@coredis_unclosed_buffers[0]
@coredis_unclosed_buffers[1]
async def test_calls_while_redis_is_down_raise_redis_unavailable(
    own_server: EmbeddedServer, unique: str
) -> None:
    async with pulse_trio.connect(own_server.url) as client:
        stream = Stream(client, unique, ttl=5)
        await stream.add("e", b"")
        await own_server.stop()
        for call in (
            lambda: stream.add("e", b""),
            lambda: Stream(client, unique).add("e", b""),
            lambda: stream.add_many([("e", b"")]),
            lambda: stream.remove("1-1"),
            stream.info,
            stream.destroy,
        ):
            with pytest.raises(pulse_trio.RedisUnavailableError, match=unique):
                await call()
        with pytest.raises(pulse_trio.RedisUnavailableError, match=unique):
            async with stream.open_reader():
                pass
        await own_server.start()
        assert (await stream.info()).length == 1


@pytest.mark.parametrize("start", [NEWEST, OLDEST, "1-1"])
async def test_wrong_type_at_open_raises_plainly_whatever_the_start(
    client: Client, unique: str, start: Any
) -> None:
    stream = Stream(client, unique)
    await client.set(stream.key, "x")
    with pytest.raises(StreamError, match=stream.key):
        async with stream.open_reader(start=start):
            pass
