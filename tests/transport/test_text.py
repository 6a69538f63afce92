"""Text arguments: str is sent as UTF-8 with surrogateescape (the inverse of how replies are
decoded into text); one caller's unencodable argument fails that caller alone, in its own
task, never the other callers of the same pipelined write."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pulse_trio
from pulse_trio._errors import UnencodableTextError
from pulse_trio._redis import Client
from pulse_trio._redis._resp import encode_command, encode_text
from pulse_trio._text import text

from .._texts import TEXT

pytestmark = pytest.mark.anyio


@given(st.binary())
def test_text_read_from_bytes_is_sent_back_as_those_bytes(raw: bytes) -> None:
    decoded = text(raw)
    assert encode_text(decoded) == raw
    assert encode_command(("SET", "k", decoded)) == encode_command(("SET", "k", raw))


@given(TEXT)
def test_a_str_is_sent_or_refused_with_a_pulse_error(value: str) -> None:
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        with pytest.raises(UnencodableTextError) as info:
            encode_command(("SET", "k", value))
        assert isinstance(info.value, pulse_trio.PulseError)
        assert isinstance(info.value, ValueError)
        assert info.value.value == value
    else:
        assert encode_command(("SET", "k", value)) == encode_command(("SET", "k", raw))


def test_type_errors_still_name_the_argument() -> None:
    with pytest.raises(TypeError, match="cannot send bool True"):
        encode_command(("SET", "\udcff", True))


async def test_escaped_text_is_written_as_its_bytes(rclient: Client, unique: str) -> None:
    await rclient.execute("SET", f"{unique}-\udcff", "caf\udce9")
    assert await rclient.execute("GET", f"{unique}-".encode() + b"\xff") == b"caf\xe9"


async def test_one_unencodable_caller_fails_alone_in_a_pipelined_write(
    rclient: Client, unique: str
) -> None:
    """Callers queued while a write is in flight share the next send: the one with a lone
    surrogate fails in its own task (nothing of it is queued), the others succeed."""
    mux = await rclient._topology.primaries()[0].multiplexed()
    requests, writes = mux.requests, mux.writes
    results: dict[int, Any] = {}
    count = 40
    bad = {7, 23}

    async def one(i: int) -> None:
        value = "\ud800" if i in bad else f"v{i}"
        try:
            results[i] = await rclient.execute("SET", f"{unique}-{i}", value)
        except Exception as exc:
            results[i] = exc

    async with anyio.create_task_group() as tg:
        for i in range(count):
            tg.start_soon(one, i)
    for i in range(count):
        if i in bad:
            assert isinstance(results[i], UnencodableTextError), results[i]
        else:
            assert results[i] == b"OK", results[i]
    # The good ones shared writes (batched), and the bad ones never reached the connection.
    assert mux.requests - requests == count - len(bad)
    assert mux.writes - writes < count - len(bad)
    values = await rclient.execute("MGET", *[f"{unique}-{i}" for i in range(count)])
    assert values == [None if i in bad else f"v{i}".encode() for i in range(count)]


async def test_execute_many_with_an_unencodable_command_sends_nothing(
    rclient: Client, unique: str
) -> None:
    mux = await rclient._topology.primaries()[0].multiplexed()
    requests = mux.requests
    with pytest.raises(UnencodableTextError):
        await rclient.execute_many([("SET", f"{unique}-a", "1"), ("SET", f"{unique}-b", "\udbff")])
    assert mux.requests == requests
    assert await rclient.execute("EXISTS", f"{unique}-a") == 0


async def test_subscribing_to_an_unencodable_channel_is_refused(rclient: Client) -> None:
    with pytest.raises(UnencodableTextError):
        async with rclient.subscribe("\ud800"):
            pass  # pragma: no cover
