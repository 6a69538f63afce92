"""The rmap wire format and revision decisions (pure code, no Redis)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pulse_trio.rmap._protocol import (
    Action,
    DecodeError,
    Message,
    MessageKind,
    classify,
    decode_message,
    encode_message,
    encode_values,
    parse_values,
    snapshot_from_hash,
)


def test_set_message_bytes_match_the_reference_example() -> None:
    # goa.design/pulse's documented example: set foo=bar at revision 7.
    expected = b"set:\x03\x00\x00\x00foo\x03\x00\x00\x00bar\x01\x00\x00\x007"
    assert encode_message(Message(MessageKind.SET, 7, "foo", "bar")) == expected
    assert decode_message(expected) == Message(MessageKind.SET, 7, "foo", "bar")


def test_del_reset_destroy_bytes() -> None:
    assert encode_message(Message(MessageKind.DEL, 12, "k")) == (
        b"del:\x01\x00\x00\x00k\x02\x00\x00\x0012"
    )
    assert encode_message(Message(MessageKind.RESET, 3)) == b"reset:3"
    assert encode_message(Message(MessageKind.DESTROY, 4)) == b"destroy:4"
    assert decode_message(b"destroy:4") == Message(MessageKind.DESTROY, 4)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"set",
        b"nope:1",
        b"reset:",
        b"reset:abc",
        b"reset:0",
        b"destroy:",  # goa.design/pulse rejects a destroy without revision too
        b"set:\x03\x00\x00\x00fo",
        b"set:\x03\x00\x00\x00foo\x03\x00\x00\x00bar",
        b"del:\x01\x00\x00\x00k\x01\x00\x00\x001extra",
    ],
)
def test_malformed_messages_are_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_message(data)


def test_non_utf8_bytes_decode_like_snapshots() -> None:
    # Go may store arbitrary bytes: a notification and HGETALL must agree on the str.
    message = decode_message(b"set:\x01\x00\x00\x00k\x01\x00\x00\x00\xff\x01\x00\x00\x001")
    content, _, _ = snapshot_from_hash({b"k": b"\xff"})
    assert message.value == content["k"] == "\udcff"


@given(
    kind=st.sampled_from(list(MessageKind)),
    revision=st.integers(min_value=1, max_value=2**63),
    key=st.text(min_size=1),
    value=st.text(),
)
def test_encode_decode_round_trip(kind: MessageKind, revision: int, key: str, value: str) -> None:
    message = Message(
        kind,
        revision,
        key if kind in (MessageKind.SET, MessageKind.DEL) else None,
        value if kind is MessageKind.SET else None,
    )
    assert decode_message(encode_message(message)) == message


def test_values_encoding_escapes_slashes_like_cjson() -> None:
    assert encode_values(["a/b", "c"]) == '["a\\/b","c"]'
    assert encode_values(["é"]) == '["é"]'


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('["a\\/b","c"]', ["a/b", "c"]),
        (' ["x"] ', ["x"]),
        ("a,b", ["a", "b"]),
        ("", [""]),
        ("x", ["x"]),
        ("[1,2]", ["[1", "2]"]),  # not a list of strings: comma fallback, as Go does
    ],
)
def test_parse_values_follows_goa_pulse(raw: str, expected: list[str]) -> None:
    assert parse_values(raw) == expected


@given(st.lists(st.text()))
def test_encoded_values_parse_back(values: list[str]) -> None:
    assert parse_values(encode_values(values)) == values
    assert json.loads(encode_values(values)) == values


def test_snapshot_strips_reserved_fields() -> None:
    content, revision, kind = snapshot_from_hash({b"=rev": b"9", b"=kind": b"set", b"a": b"1"})
    assert (content, revision, kind) == ({"a": "1"}, 9, "set")
    assert snapshot_from_hash({b"a": b"1"}) == ({"a": "1"}, 0, None)
    assert snapshot_from_hash({b"=rev": b"junk"})[1] == 0


@pytest.mark.parametrize(
    ("local", "last", "received", "action"),
    [
        (5, None, 6, Action.APPLY),
        (5, 5, 6, Action.APPLY),
        (5, None, 8, Action.RESYNC),  # gap
        (5, 6, 8, Action.RESYNC),  # gap
        (5, None, 4, Action.VERIFY),  # before the snapshot, or a reset counter: ask Redis
        (5, 3, 4, Action.DROP),  # still catching up to the snapshot
        (5, 4, 4, Action.RESYNC),  # not increasing on one subscription: counter reset
        (5, 9, 1, Action.RESYNC),  # counter went backwards (hash expired)
        (0, None, 1, Action.APPLY),
    ],
)
def test_classify(local: int, last: int | None, received: int, action: Action) -> None:
    assert classify(local, last, received) is action


@given(
    start=st.integers(min_value=0, max_value=50),
    snapshot_lag=st.integers(min_value=0, max_value=10),
    more=st.integers(min_value=0, max_value=20),
)
def test_a_replica_that_subscribed_before_its_snapshot_applies_exactly_the_later_writes(
    start: int, snapshot_lag: int, more: int
) -> None:
    # Revisions start+1 .. start+snapshot_lag were published after SUBSCRIBE but before the
    # snapshot (taken at start+snapshot_lag); later ones after. Each must be applied once.
    local = start + snapshot_lag
    last: int | None = None
    applied = []
    for revision in range(start + 1, start + snapshot_lag + more + 1):
        action = classify(local, last, revision)
        if action is Action.VERIFY:
            action = Action.DROP  # Redis holds >= local: nothing was reset
        assert action in (Action.APPLY, Action.DROP)
        if action is Action.APPLY:
            local = revision
            applied.append(revision)
        last = revision
    assert applied == list(range(start + snapshot_lag + 1, start + snapshot_lag + more + 1))
