"""The one text rule (``pulse_trio._names``), its agreement with how text is read
(``pulse_trio._text``) and written (the transport), the batch guard, and bytes read back
from Redis that are not UTF-8: no ``UnicodeError`` escapes a public call."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pulse_trio import PulseError, pool, rmap
from pulse_trio._batch import UnsendableArgumentError, split_sendable
from pulse_trio._errors import UnencodableTextError
from pulse_trio._names import is_lossless_text, is_strict_text, text_problem
from pulse_trio._redis._resp import encode_command
from pulse_trio._text import text, writable
from pulse_trio.pool._protocol import jobs_key
from pulse_trio.rmap._protocol import content_key

from ._texts import TEXT
from .pool._helpers import Recorder, node


@given(TEXT)
@example("\ud800")
@example("\udcff")
@example("\udcc3\udca9")
@example("\ud83d\ude00")
def test_the_rules_are_the_round_trips(value: str) -> None:
    try:
        value.encode("utf-8")
        strict = True
    except UnicodeEncodeError:
        strict = False
    try:
        lossless = text(value.encode("utf-8", "surrogateescape")) == value
    except UnicodeEncodeError:
        lossless = False
    assert is_strict_text(value) == strict == (text_problem(value, lossless=False) is None)
    assert is_lossless_text(value) == lossless == (text_problem(value, lossless=True) is None)
    assert lossless or not strict  # strict text is lossless
    if lossless:  # what the transport writes is what is read back
        command = encode_command(("SET", "k", value))
        assert command.endswith(value.encode("utf-8", "surrogateescape") + b"\r\n")


@given(st.binary())
def test_text_read_from_redis_is_lossless(raw: bytes) -> None:
    assert is_lossless_text(text(raw))


@given(TEXT)
def test_writable_messages_are_strict_utf8(value: str) -> None:
    shown = writable(value)
    assert is_strict_text(shown)
    assert shown == value or not is_strict_text(value)


def test_the_batch_guard_splits_off_unsendable_members() -> None:
    items = ["ok", "\ud800", "\udcff", 3, True, None]
    kept, refused = split_sendable(items, lambda item: ("prefix", item))  # type: ignore[arg-type,return-value]
    assert kept == ["ok", "\udcff", 3]
    assert [item for item, _ in refused] == ["\ud800", True, None]
    assert isinstance(refused[0][1], UnencodableTextError)
    assert all(isinstance(error, PulseError) for _, error in refused)
    assert isinstance(refused[1][1], UnsendableArgumentError)


# --- bytes that are not UTF-8, written by another process ------------------------------------


@pytest.mark.anyio
async def test_a_map_reads_and_writes_back_bytes_that_are_not_utf8(
    client: Any, unique: str
) -> None:
    await client.hset(content_key(unique), {b"k\xff": b"caf\xe9", b"=rev": b"1"})
    async with rmap.join(client, unique) as m:
        assert m.get("k\udcff") == "caf\udce9"
        await m.set_and_wait("k\udcff", m.get("k\udcff") + "!")  # type: ignore[operator]
        assert m.get("k\udcff") == "caf\udce9!"
    assert await client.hget(content_key(unique), b"k\xff") == b"caf\xe9!"


@pytest.mark.anyio
async def test_pool_records_with_bytes_that_are_not_utf8(client: Any, unique: str) -> None:
    async with node(client, unique) as n:
        await n.add_worker(Recorder())
        await n.dispatch_job("k\udcff", b"p")
        raw = await client.hget(jobs_key(unique), b"k\xff")
        assert raw is not None
        record = json.loads(raw)
        record["e"] = "x"
        # Another writer's error text with a byte that is not UTF-8, inside the JSON.
        await client.hset(
            jobs_key(unique),
            {b"k\xff": json.dumps(record).replace('"x"', '"\xff"').encode("latin-1")},
        )
        with anyio.fail_after(5):
            info = await n.job("k\udcff")
        assert info is not None
        assert info.key == "k\udcff"
        assert info.error == "\udcff"
        assert [i.key for i in await n.jobs()] == ["k\udcff"]
        await n.stop_job("k\udcff")
        assert await n.job_keys() == []


def test_invalid_key_errors_are_value_errors() -> None:
    for error in (pool.InvalidJobKeyError, rmap.InvalidKeyError, rmap.InvalidValueError):
        assert issubclass(error, ValueError)
        assert issubclass(error, PulseError)
