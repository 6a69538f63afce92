"""Pure helpers: ids, start positions, the entry codec, topic filters, hash slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pulse_trio
from pulse_trio.streaming import NEWEST, OLDEST, Event, MalformedEntryError, StreamError
from pulse_trio.streaming._event import (
    TopicFilter,
    decode_entry,
    encode_fields,
    id_key,
    id_to_datetime,
    start_to_id,
    stream_key,
    validate_event_id,
    wrong_type_error,
)
from pulse_trio.streaming._options import key_slot

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX = 2**64 - 1


def test_stream_key() -> None:
    assert stream_key("orders") == "pulse:stream:orders"


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [("1", "1-0"), ("1-2", "1-2"), ("0-0", "0-0"), (f"{MAX}-{MAX}", f"{MAX}-{MAX}")],
)
def test_validate_event_id(raw: str, normalised: str) -> None:
    assert validate_event_id(raw) == normalised


@pytest.mark.parametrize("raw", ["", "a-1", "1-", "-1", "1-2-3", " 1-2", f"{MAX + 1}-0", "$"])
def test_validate_event_id_rejects(raw: str) -> None:
    with pytest.raises(ValueError, match="invalid event id"):
        validate_event_id(raw)


def test_start_to_id_symbols_and_errors() -> None:
    assert start_to_id(NEWEST) == "$"
    assert start_to_id(OLDEST) == "0-0"
    assert start_to_id("5-1") == "5-1"
    assert start_to_id(EPOCH) == "0-0"
    assert start_to_id(EPOCH + timedelta(milliseconds=2000)) == f"1999-{MAX}"
    with pytest.raises(ValueError, match="timezone-aware"):
        start_to_id(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="invalid start"):
        start_to_id(12)  # type: ignore[arg-type]


@given(
    target_ms=st.integers(min_value=1, max_value=2**45),
    entry_ms=st.integers(min_value=0, max_value=2**45),
    entry_seq=st.integers(min_value=0, max_value=MAX),
    offset_hours=st.integers(min_value=-12, max_value=12),
)
def test_datetime_start_includes_exactly_the_entries_from_that_millisecond(
    target_ms: int, entry_ms: int, entry_seq: int, offset_hours: int
) -> None:
    zone = timezone(timedelta(hours=offset_hours))
    start = (EPOCH + timedelta(milliseconds=target_ms)).astimezone(zone)
    after = id_key(start_to_id(start))
    entry = (entry_ms, entry_seq)
    assert (entry > after) == (entry_ms >= target_ms)


@given(ms=st.integers(min_value=0, max_value=2**45), seq=st.integers(min_value=0, max_value=9))
def test_id_to_datetime(ms: int, seq: int) -> None:
    when = id_to_datetime(f"{ms}-{seq}")
    assert when == EPOCH + timedelta(milliseconds=ms)
    assert when.tzinfo is UTC
    event = Event(f"{ms}-{seq}", "s", None, "n", None, b"")
    assert event.created_at == when


def test_encode_fields_order_and_topic() -> None:
    assert list(encode_fields("n", b"p", "t").items()) == [("n", "n"), ("p", b"p"), ("t", "t")]
    assert encode_fields("n", b"p", None) == {"n": "n", "p": b"p"}
    assert encode_fields("n", b"p", "") == {"n": "n", "p": b"p"}


@given(
    name=st.text(),
    payload=st.binary(),
    topic=st.none() | st.text(min_size=1),
    as_bytes=st.booleans(),
)
def test_decode_inverts_encode(
    name: str, payload: bytes, topic: str | None, as_bytes: bool
) -> None:
    fields = encode_fields(name, payload, topic)
    raw = {
        (k.encode() if as_bytes else k): (v.encode() if isinstance(v, str) else v)
        for k, v in fields.items()
    }
    event = decode_entry(b"7-3" if as_bytes else "7-3", raw, stream_name="s", sink_name="k")
    assert event == Event("7-3", "s", "k", name, topic, payload, 1)


@pytest.mark.parametrize(
    "fields",
    [{}, {b"n": b"x"}, {b"p": b"x"}, {b"foo": b"bar"}, {b"n": b"\xff", b"p": b""}],
)
def test_decode_rejects_malformed_entries(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(MalformedEntryError, match="1-1") as caught:
        decode_entry(b"1-1", fields, stream_name="s")
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, pulse_trio.PulseError)


def test_decode_empty_topic_is_none() -> None:
    event = decode_entry("1-1", {b"n": b"x", b"p": b"", b"t": b""}, stream_name="s")
    assert event.topic is None


def test_topic_filter() -> None:
    everything = TopicFilter.build(None, None)
    assert everything.matches(None)
    assert everything.matches("x")
    exact = TopicFilter.build("a.b", "ignored(")
    assert exact.matches("a.b")
    assert not exact.matches("a.bc")
    assert not exact.matches(None)
    pattern = TopicFilter.build(None, r"b\.c")
    assert pattern.matches("a.b.c.d")  # unanchored
    assert not pattern.matches("abxc")
    assert TopicFilter.build(None, "^$").matches(None)
    with pytest.raises(ValueError, match="valid regex"):
        TopicFilter.build(None, "(")
    with pytest.raises(ValueError, match="topic must be a str"):
        TopicFilter.build(3, None)  # type: ignore[arg-type]


def test_wrong_type_error() -> None:
    error = wrong_type_error("orders")
    assert isinstance(error, StreamError)
    assert isinstance(error, pulse_trio.PulseError)
    assert error.stream == "orders"
    assert error.key == "pulse:stream:orders"
    assert "pulse:stream:orders" in str(error)


@pytest.mark.parametrize(
    ("key", "slot"),
    [("foo", 12182), ("bar", 5061), ("", 0), ("123456789", 12739)],
)
def test_key_slot_known_values(key: str, slot: int) -> None:
    assert key_slot(key) == slot


def test_key_slot_hash_tags() -> None:
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    assert key_slot("{user1000}.following") == key_slot("user1000")
    assert key_slot("foo{}{bar}") == key_slot("foo{}{bar}")  # empty tag: whole key
    assert key_slot("foo{}{bar}") != key_slot("bar")
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")
    assert key_slot("foo{bar}{zap}") == key_slot("bar")
