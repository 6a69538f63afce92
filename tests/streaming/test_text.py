"""The text rule of streams (see ``pulse_trio._names``): stream names, sink names, event names
and topics are strict UTF-8. Generated text with lone surrogates, control and non-BMP
characters is either refused with a ``ValueError`` before any I/O, or written and read back
identical; and a sink's acknowledgements from several callers stay isolated."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import given

import pulse_trio
from pulse_trio import streaming
from pulse_trio._names import is_strict_text
from pulse_trio.streaming import OLDEST, Stream

from .._texts import EDGES, REDIS_SETTINGS, TEXTS, escaped, refused_before_io
from .._util import offline_client
from .conftest import wait_until_async

pytestmark = pytest.mark.anyio

_FORBIDDEN_IN_NAMES = set(" \0*?[]")


def _valid_name(name: str) -> bool:
    return is_strict_text(name) and not set(name) & _FORBIDDEN_IN_NAMES and len(name) <= 512


@REDIS_SETTINGS
@given(TEXTS)
async def test_event_names_and_topics(client: Any, unique: str, values: list[str]) -> None:
    stream = Stream(client, unique + uuid.uuid4().hex[:6])
    offline = Stream(offline_client(), "s")
    accepted: list[tuple[str, str]] = []
    for value in [*values, *EDGES]:
        for event_name, topic in ((value, "t"), ("e", value)):
            refused = await refused_before_io(
                lambda: offline.add(event_name, b"p", topic=topic)  # noqa: B023
            )
            assert (refused is None) == is_strict_text(value)
            if refused is not None:
                assert isinstance(refused, pulse_trio.InvalidNameError)
                with pytest.raises(pulse_trio.InvalidNameError):  # a filter nothing matches
                    offline.open_reader(topic=value)
                with pytest.raises(pulse_trio.InvalidNameError):
                    offline.open_sink("s", topic=value)
                with pytest.raises(pulse_trio.InvalidNameError):
                    await stream.add(event_name, b"p", topic=topic)
                with pytest.raises(pulse_trio.InvalidNameError):  # nothing of the batch
                    await stream.add_many([("ok", b"p"), (event_name, b"p", topic)])
                continue
            await stream.add(event_name, b"p", topic=topic)
            accepted.append((event_name, topic))
    assert (await stream.info()).length == len(accepted)
    if not accepted:
        return
    async with stream.open_reader(start=OLDEST, block=0.05) as reader:
        with anyio.fail_after(10):
            read = [await reader.__anext__() for _ in accepted]
    assert [(e.event_name, e.topic) for e in read] == accepted


@REDIS_SETTINGS
@given(TEXTS)
async def test_stream_and_sink_names(client: Any, unique: str, values: list[str]) -> None:
    unique += uuid.uuid4().hex[:6]
    offline_stream = Stream(offline_client(), "s")
    for i, value in enumerate([*values, *EDGES]):
        name = f"{unique}{i}{value}"
        try:
            Stream(offline_client(), name)  # validates, no I/O
        except pulse_trio.InvalidNameError:
            assert not _valid_name(name)
        else:
            assert _valid_name(name)
            stream = Stream(client, name)
            await stream.add("e", b"p")
            assert await client.xlen(b"pulse:stream:" + escaped(name)) == 1
            assert (await Stream(client, name).info()).length == 1
        try:
            offline_stream.open_sink(value)  # validates, no I/O
        except pulse_trio.InvalidNameError:
            assert not _valid_name(value)
            continue
        assert _valid_name(value)
        sink_stream = Stream(client, f"{unique}-sinks")
        await sink_stream.add("e", b"p")
        async with sink_stream.open_sink(value, start=OLDEST, block=0.05) as sink:
            with anyio.fail_after(10):
                event = await sink.__anext__()
            assert event.sink_name == value
            assert await sink.ack(event) == 1
        info = await sink_stream.info()
        assert value in [s.name for s in info.sinks]


# --- batched acknowledgements ----------------------------------------------------------------


async def _pending(client: Any, stream: str, sink: str) -> int:
    summary = await client.xpending(streaming._event.stream_key(stream), sink)
    return int(summary.pending)


def _bad_events(event: streaming.Event) -> list[streaming.Event]:
    """Events built by hand that no sink can acknowledge: a lone surrogate in the stream name,
    an id that is not one, an id beyond 2**64."""
    return [
        attrs.evolve(event, stream_name="\ud800"),
        attrs.evolve(event, id="not-an-id"),
        attrs.evolve(event, id=f"{2**64}-0"),
    ]


async def test_concurrent_acks_one_bad_fails_alone(client: Any, unique: str) -> None:
    """``ack`` from several tasks at once: their XACKs share one write of the transport; the
    caller with a bad event fails alone (in its own task), the others are acknowledged."""
    stream = Stream(client, unique)
    await stream.add_many([("e", str(i).encode()) for i in range(6)])
    async with stream.open_sink("s", start=OLDEST, block=0.05) as sink:
        with anyio.fail_after(10):
            events = [await sink.__anext__() for _ in range(6)]
        bad = _bad_events(events[0])
        results: dict[int, Any] = {}

        async def ack(i: int, event: streaming.Event) -> None:
            try:
                results[i] = await sink.ack(event)
            except Exception as exc:
                results[i] = exc

        async with anyio.create_task_group() as tg:
            for i, event in enumerate([*events[:3], *bad, *events[3:]]):
                tg.start_soon(ack, i, event)
    for i in (0, 1, 2, 6, 7, 8):
        assert results[i] == 1
    for i in (3, 4, 5):
        assert isinstance(results[i], streaming.InvalidEventError), results[i]
        assert isinstance(results[i], ValueError)
    assert await _pending(client, unique, "s") == 0


async def test_ack_nowait_one_bad_fails_alone(client: Any, unique: str) -> None:
    """``ack_nowait`` queues several callers' events for one flush: a bad one is refused in
    its caller (never queued), the others of the same flush are acknowledged."""
    stream = Stream(client, unique)
    other = Stream(client, f"{unique}-2")
    await stream.add_many([("e", str(i).encode()) for i in range(4)])
    await other.add_many([("e", str(i).encode()) for i in range(4)])
    async with stream.open_sink("s", start=OLDEST, block=0.05) as sink:
        await sink.add_stream(other, start=OLDEST)
        with anyio.fail_after(10):
            events = [await sink.__anext__() for _ in range(8)]
        # No checkpoint between these calls: they all join the same queued batch.
        sink.ack_nowait(*events[:4])
        for bad in _bad_events(events[0]):
            with pytest.raises(streaming.InvalidEventError):
                sink.ack_nowait(events[4], bad)  # refused as a whole: nothing queued
        sink.ack_nowait(*events[4:])

        async def all_acked() -> bool:
            return (
                await _pending(client, unique, "s") + await _pending(client, other.name, "s") == 0
            )

        await wait_until_async(all_acked, what="the good acknowledgements were sent")
        assert sink.statistics().acked == 8
