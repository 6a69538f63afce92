"""The sans-I/O core fed with plain bytes: encoding, parsing, FIFO matching, pub/sub state."""

from __future__ import annotations

import itertools
from typing import Any

import hiredis
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pulse_trio._redis._resp import (
    PUSH,
    Confirmation,
    Message,
    Pong,
    ProtocolError,
    PubSubState,
    ResponseError,
    RespState,
    encode_command,
)

# --- a server-side RESP encoder, for the tests only: (wire bytes, value hiredis returns) ---

_simple_text = st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b)


def _leaf(resp3: bool) -> st.SearchStrategy[tuple[bytes, Any]]:
    leaves = [
        _simple_text.map(lambda b: (b"+" + b + b"\r\n", b)),
        st.binary(max_size=200).map(lambda b: (b"$%d\r\n%s\r\n" % (len(b), b), b)),
        st.integers(-(2**63), 2**63 - 1).map(lambda i: (b":%d\r\n" % i, i)),
        st.just((b"$-1\r\n", None)),
        st.just((b"*-1\r\n", None)),
        _simple_text.map(
            lambda b: (b"-ERR " + b + b"\r\n", ResponseError("ERR " + b.decode("utf-8", "replace")))
        ),
    ]
    if resp3:
        leaves += [
            st.just((b"_\r\n", None)),
            st.booleans().map(lambda v: (b"#t\r\n" if v else b"#f\r\n", v)),
            st.floats(allow_nan=False, allow_infinity=False).map(
                lambda f: (b"," + repr(f).encode() + b"\r\n", f)
            ),
            st.integers(2**64, 2**80).map(lambda i: (b"(%d\r\n" % i, str(i).encode())),
            st.binary(max_size=50).map(lambda b: (b"=%d\r\ntxt:%s\r\n" % (len(b) + 4, b), b)),
        ]
    return st.one_of(leaves)


def _values(resp3: bool) -> st.SearchStrategy[tuple[bytes, Any]]:
    def extend(
        children: st.SearchStrategy[tuple[bytes, Any]],
    ) -> st.SearchStrategy[tuple[bytes, Any]]:
        def array(items: list[tuple[bytes, Any]], prefix: bytes = b"*") -> tuple[bytes, Any]:
            return (
                prefix + b"%d\r\n" % len(items) + b"".join(w for w, _ in items),
                [v for _, v in items],
            )

        def mapping(pairs: list[tuple[bytes, tuple[bytes, Any]]]) -> tuple[bytes, Any]:
            unique = dict(pairs)
            wire = b"%%%d\r\n" % len(unique) + b"".join(
                b"$%d\r\n%s\r\n" % (len(k), k) + w for k, (w, _) in unique.items()
            )
            return wire, {k: v for k, (_, v) in unique.items()}

        options = [st.lists(children, max_size=5).map(array)]
        if resp3:
            options.append(st.lists(children, max_size=5).map(lambda i: array(i, b"~")))
            options.append(
                st.lists(st.tuples(st.binary(max_size=8), children), max_size=4).map(mapping)
            )
        return st.one_of(options)

    return st.recursive(_leaf(resp3), extend, max_leaves=20)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, ResponseError) or isinstance(b, ResponseError):
        return (
            isinstance(a, ResponseError)
            and isinstance(b, ResponseError)
            and (a.message == b.message and a.code == b.code)
        )
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _feed_in_pieces(state: RespState[Any], wire: bytes, cuts: list[int]) -> list[tuple[Any, Any]]:
    out: list[tuple[Any, Any]] = []
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    for start, end in itertools.pairwise(points):
        out += state.receive_data(wire[start:end])
    return out


# No per-example deadline: the machine is shared, and timing is not what these check.
@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
@settings(deadline=None)
@given(data=st.data())
def test_replies_round_trip_in_any_chunking(resp3: bool, data: st.DataObject) -> None:
    """Every RESP value comes out as hiredis's Python value, matched to its request in order."""
    values = data.draw(st.lists(_values(resp3), min_size=1, max_size=8))
    cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=10))
    state: RespState[int] = RespState()
    for i in range(len(values)):
        state.queue(i, encode_command(("PING",)))
    assert state.data_to_send() == b"*1\r\n$4\r\nPING\r\n" * len(values)
    wire = b"".join(w for w, _ in values)
    completed = _feed_in_pieces(state, wire, cuts)
    assert [t for t, _ in completed] == list(range(len(values)))
    for (_, got), (_, expected) in zip(completed, values, strict=True):
        assert _same(got, expected), (got, expected)
    assert state.waiting == 0


_arg = st.one_of(
    st.binary(max_size=100),
    st.text(max_size=30),
    st.integers(-(2**63), 2**63 - 1),
)


def _as_sent(arg: bytes | str | int) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    return str(arg).encode()


@settings(deadline=None)
@given(st.lists(st.lists(_arg, min_size=1, max_size=6), min_size=1, max_size=5))
def test_encoded_requests_parse_back_to_their_arguments(commands: list[list[Any]]) -> None:
    """A request is an array of bulk strings: str as UTF-8, ints in decimal, bytes as is."""
    reader = hiredis.Reader()
    reader.feed(b"".join(encode_command(c) for c in commands))
    for command in commands:
        assert reader.gets() == [_as_sent(a) for a in command]
    assert reader.gets() is False


def test_encode_rejects_what_redis_cannot_take() -> None:
    with pytest.raises(ValueError, match="at least"):
        encode_command(())
    with pytest.raises(TypeError, match="NoneType"):
        encode_command(("SET", "k", None))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bool"):
        encode_command(("SET", "k", True))


def test_dropped_tokens_and_push_messages_keep_the_fifo_in_step() -> None:
    """A reply nobody waits for (token None) is consumed; pushes never take a request's reply."""
    state: RespState[str] = RespState()
    state.queue("a", b"x")
    state.queue(None, b"y")  # a cancelled caller's request
    state.queue("c", b"z")
    assert state.data_to_send() == b"xyz"
    got = state.receive_data(b"+A\r\n>2\r\n+invalidate\r\n*0\r\n+B\r\n:3\r\n")
    assert got == [("a", b"A"), (PUSH, [b"invalidate", []]), (None, b"B"), ("c", 3)]


def test_fail_tells_written_from_unwritten_requests() -> None:
    state: RespState[str] = RespState()
    state.queue("sent-1", b"1")
    state.queue(None, b"2")
    state.queue("sent-2", b"3")
    state.data_to_send()
    state.queue("unsent", b"4")
    assert state.unsent == 1
    assert state.fail() == (["sent-1", "sent-2"], ["unsent"])
    assert state.waiting == 0
    with pytest.raises(ProtocolError):
        state.queue("after", b"5")


def test_a_reply_nobody_asked_for_is_a_protocol_error() -> None:
    state: RespState[str] = RespState()
    with pytest.raises(ProtocolError, match="no request"):
        state.receive_data(b"+OK\r\n")
    other: RespState[str] = RespState()
    other.queue("queued-not-sent", b"x")
    with pytest.raises(ProtocolError, match="no request"):
        other.receive_data(b"+OK\r\n")


def test_garbage_is_a_protocol_error() -> None:
    state: RespState[str] = RespState()
    state.queue("a", b"x")
    state.data_to_send()
    with pytest.raises(ProtocolError, match="invalid data"):
        state.receive_data(b"!nonsense\r\n")


def test_response_error_carries_message_and_code() -> None:
    state: RespState[str] = RespState()
    state.queue("a", b"x")
    state.data_to_send()
    [(_, error)] = state.receive_data(b"-NOSCRIPT No matching script.\r\n")
    assert isinstance(error, ResponseError)
    assert error.code == "NOSCRIPT"
    assert error.message == "NOSCRIPT No matching script."


# --- pub/sub state ------------------------------------------------------------------------


def test_pubsub_state_confirms_and_resubscribes() -> None:
    state = PubSubState()
    state.subscribe(["a", b"b"], patterns=["p*"])
    sent = state.data_to_send()
    assert b"SUBSCRIBE" in sent
    assert b"PSUBSCRIBE" in sent
    assert not state.ready
    events = state.receive_data(
        b">3\r\n+subscribe\r\n$1\r\na\r\n:1\r\n"
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"  # RESP2 form
        b">3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:3\r\n"
    )
    assert events == [
        Confirmation(b"subscribe", b"a", 1),
        Confirmation(b"subscribe", b"b", 2),
        Confirmation(b"psubscribe", b"p*", 3),
    ]
    assert state.ready
    events = state.receive_data(
        b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n"
        b">4\r\n$8\r\npmessage\r\n$2\r\np*\r\n$2\r\npq\r\n$0\r\n\r\n"
        b"+PONG\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n"
    )
    assert events == [Message(b"a", b"hi"), Message(b"pq", b"", pattern=b"p*"), Pong(), Pong()]
    state.resubscribe()
    assert not state.ready
    again = state.data_to_send()
    assert again == encode_command(("SUBSCRIBE", b"a", b"b")) + encode_command(
        ("PSUBSCRIBE", b"p*")
    )
    state.unsubscribe(["a"])
    assert state.data_to_send() == encode_command(("UNSUBSCRIBE", b"a"))
    assert state.channels == {b"b"}


def test_pubsub_state_rejects_ordinary_replies() -> None:
    state = PubSubState()
    with pytest.raises(ProtocolError, match="subscriber"):
        state.receive_data(b":1\r\n")


# --- the core as a state machine: any interleaving of queue / send / receive / fail -------


class RespStateMachine(RuleBasedStateMachine):
    """:class:`RespState` against a model: a FIFO of (token, sent?) and the server's replies.

    The "server" answers request ``n`` with ``:n`` once the request was handed out; its
    bytes arrive in arbitrary pieces. Tokens are unique ints, or None for dropped replies.
    """

    def __init__(self) -> None:
        super().__init__()
        self.state: RespState[int] = RespState()
        self.model: list[tuple[int | None, int, bool]] = []  # (token, number, sent)
        self.number = 0
        self.in_transit = b""  # reply bytes produced by the server, not yet received
        self.answered = 0  # requests the server has answered (in order)
        self.broken = False

    @precondition(lambda self: not self.broken)
    @rule(dropped=st.booleans())
    def queue(self, dropped: bool) -> None:
        token = None if dropped else self.number
        self.state.queue(token, encode_command(("ECHO", self.number)))
        note(f"queue {self.number} token={token}")
        self.model.append((token, self.number, False))
        self.number += 1

    @precondition(lambda self: not self.broken)
    @rule()
    def send(self) -> None:
        data = self.state.data_to_send()
        unsent = [m for m in self.model if not m[2]]
        assert data == b"".join(encode_command(("ECHO", n)) for _, n, _ in unsent)
        self.model = [(t, n, True) for t, n, _ in self.model]
        assert self.state.unsent == 0

    @precondition(lambda self: not self.broken)
    @rule()
    def server_answers(self) -> None:
        sent = [m for m in self.model if m[2]]
        for _, n, _ in sent[self.answered :]:
            self.in_transit += b":%d\r\n" % n
        self.answered = len(sent)

    @precondition(lambda self: not self.broken and bool(self.in_transit))
    @rule(cut=st.integers(1, 50))
    def receive(self, cut: int) -> None:
        piece, self.in_transit = self.in_transit[:cut], self.in_transit[cut:]
        for token, reply in self.state.receive_data(piece):
            head = self.model.pop(0)
            self.answered -= 1
            assert (token, reply) == (head[0], head[1])

    @precondition(lambda self: not self.broken)
    @rule()
    def connection_lost(self) -> None:
        sent, unsent = self.state.fail()
        assert sent == [t for t, _, s in self.model if s and t is not None]
        assert unsent == [t for t, _, s in self.model if not s and t is not None]
        self.broken = True

    @precondition(lambda self: self.broken)
    @rule()
    def reconnect(self) -> None:
        self.state = RespState()
        self.model, self.in_transit, self.answered, self.broken = [], b"", 0, False

    @invariant()
    def counts_agree(self) -> None:
        if not self.broken:
            assert self.state.waiting == len(self.model)
            assert self.state.unsent == sum(1 for m in self.model if not m[2])


TestRespStateMachine = RespStateMachine.TestCase
TestRespStateMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
