"""The request/reply bookkeeping without sockets: plain bytes in, replies and failures out.

:class:`~pulse_trio._redis._requests.RequestLedger` decides which reply belongs to which
waiter and what a lost connection means for each request; the multiplexed connection only
moves bytes. These tests play both the driver and the server.
"""

from __future__ import annotations

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pulse_trio import RedisUnavailableError
from pulse_trio._redis import ConnectionLostError, ProtocolError, ResponseError
from pulse_trio._redis._requests import (
    IDEMPOTENT_COMMANDS,
    RequestLedger,
    Waiter,
    auto_timeout,
    command_name,
    safe_to_retry,
)
from pulse_trio._redis._resp import encode_command


class _Event:
    """A synchronous stand-in for the backend's event: counts how often it was set."""

    def __init__(self) -> None:
        self.sets = 0

    def set(self) -> None:
        self.sets += 1

    def is_set(self) -> bool:
        return self.sets > 0

    async def wait(self) -> None:
        raise AssertionError("nothing waits in the sans-I/O tests")


def _waiter() -> Waiter:
    return Waiter(_Event())


def _sets(waiter: Waiter) -> int:
    event = waiter.event
    assert isinstance(event, _Event)
    return event.sets


def test_each_reply_reaches_its_own_waiter_in_any_chunking() -> None:
    ledger = RequestLedger()
    waiters = [_waiter() for _ in range(3)]
    for i, waiter in enumerate(waiters):
        ledger.queue(waiter, encode_command(("ECHO", i)))
    assert ledger.data_to_send() == b"".join(encode_command(("ECHO", i)) for i in range(3))
    wire = b"$1\r\n0\r\n-ERR no\r\n:2\r\n"
    assert ledger.deliver(wire[:5]) == 0  # half a reply completes nothing
    assert not any(w.event.is_set() for w in waiters)
    assert ledger.deliver(wire[5:]) == 3
    assert waiters[0].reply == b"0"
    assert isinstance(waiters[1].reply, ResponseError)  # returned, not raised
    assert waiters[1].reply.message == "ERR no"
    assert waiters[2].reply == 2
    assert [_sets(w) for w in waiters] == [1, 1, 1]
    assert all(w.failure is None for w in waiters)
    assert ledger.waiting == 0


def test_an_abandoned_waiter_keeps_its_place() -> None:
    """A cancelled caller's waiter still takes its own reply (nobody reads it), a request
    queued without a waiter consumes its reply, and a push message takes nobody's: the
    next caller gets its own reply, never another's."""
    ledger = RequestLedger()
    gone, mine = _waiter(), _waiter()
    ledger.queue(gone, b"GET a\r\n")  # its caller was cancelled after it was queued
    ledger.queue(None, b"PING\r\n")  # e.g. the watchdog's PING: nobody waits
    ledger.queue(mine, b"GET b\r\n")
    ledger.data_to_send()
    assert ledger.deliver(b"$1\r\na\r\n>2\r\n+invalidate\r\n*0\r\n+PONG\r\n$1\r\nb\r\n") == 4
    assert gone.reply == b"a"
    assert mine.reply == b"b"
    assert ledger.waiting == 0


def test_a_lost_connection_tells_each_waiter_whether_its_request_may_have_run() -> None:
    ledger = RequestLedger()
    answered, sent, unsent = _waiter(), _waiter(), _waiter()
    ledger.queue(answered, b"1")
    ledger.queue(None, b"2")
    ledger.queue(sent, b"3")
    ledger.data_to_send()
    ledger.queue(unsent, b"4")
    ledger.deliver(b"+OK\r\n")
    ledger.fail_waiters("connection to Redis at here lost: reset")
    assert answered.reply == b"OK"
    assert answered.failure is None
    assert _sets(answered) == 1  # answered before the loss: not woken twice
    assert isinstance(sent.failure, ConnectionLostError)
    assert sent.failure.written  # handed to the socket: the server may have run it
    assert isinstance(unsent.failure, ConnectionLostError)
    assert not unsent.failure.written  # never handed out: it certainly did not run
    assert str(unsent.failure) == "connection to Redis at here lost: reset"
    assert _sets(sent) == _sets(unsent) == 1
    assert ledger.waiting == 0
    with pytest.raises(ProtocolError):
        ledger.queue(_waiter(), b"5")  # a lost connection's ledger takes nothing more


def test_a_partly_written_request_counts_as_written() -> None:
    """Bytes the socket did not take go back (:meth:`unsend`) ahead of later requests, but
    their requests may have reached the server in part: a loss reports them written."""
    ledger = RequestLedger()
    first, second, later = _waiter(), _waiter(), _waiter()
    ledger.queue(first, b"AAAA")
    ledger.queue(second, b"BBBB")
    data = ledger.data_to_send()
    ledger.unsend(data[3:])  # the socket took 3 bytes
    ledger.queue(later, b"CCCC")
    assert ledger.data_to_send() == b"ABBBBCCCC"
    ledger.unsend(b"CCCC")
    ledger.fail_waiters("lost")
    for waiter in (first, second, later):
        assert waiter.failure is not None
        assert waiter.failure.written


def test_a_reply_nobody_awaits_breaks_the_ledger() -> None:
    ledger = RequestLedger()
    ledger.queue(_waiter(), b"x")  # queued, not yet handed out: no reply can be due
    with pytest.raises(ProtocolError, match="no request"):
        ledger.deliver(b"+OK\r\n")


@pytest.mark.parametrize(
    ("error", "idempotent", "retry"),
    [
        (ConnectionLostError("lost", written=False), False, True),
        (ConnectionLostError("lost", written=False), True, True),
        (ConnectionLostError("lost", written=True), True, True),
        (ConnectionLostError("lost", written=True), False, False),
        (RedisUnavailableError("cannot connect"), False, True),
    ],
)
def test_only_a_request_that_cannot_have_run_or_is_idempotent_is_retried(
    error: RedisUnavailableError, idempotent: bool, retry: bool
) -> None:
    assert safe_to_retry(error, idempotent=idempotent) is retry


def test_idempotent_commands_are_read_only_ones() -> None:
    assert {"GET", "PING", "XRANGE", "EVALSHA_RO"} <= IDEMPOTENT_COMMANDS
    assert not {"SET", "INCR", "XADD", "EVALSHA", "EVAL", "DEL"} & IDEMPOTENT_COMMANDS


def test_auto_timeout_adds_the_block_duration() -> None:
    assert auto_timeout(("GET", "k"), 10.0) == 10.0
    assert auto_timeout(("XREAD", "BLOCK", 1500, "STREAMS", "s", "$"), 10.0) == 11.5
    assert auto_timeout((b"xreadgroup", b"block", b"250", b"STREAMS"), 1.0) == 1.25
    assert auto_timeout(("XREAD", "BLOCK", 0, "STREAMS", "s", "$"), 10.0) is None
    assert auto_timeout(("ECHO", "BLOCK"), 2.0) == 2.0  # an argument, not the option


def test_command_name_is_text() -> None:
    assert command_name((b"XREAD", 1)) == "XREAD"
    assert command_name(("GET", "k")) == "GET"
    assert command_name((b"\xff",)) == "\ufffd"


# --- the ledger as a state machine: any interleaving, partial writes, loss -----------------


class RequestLedgerMachine(RuleBasedStateMachine):
    """A :class:`RequestLedger` driven as the multiplexed connection drives it, against a
    server that answers request ``n`` (``ECHO n``) with ``:n`` once it has all of its bytes.

    Writes may be partial (the rest is put back with ``unsend``), replies arrive in any pieces
    with push messages between them, some requests have no waiter (as the watchdog's PING),
    and the connection may be lost at any step. Checked: the bytes leave whole and in order;
    exactly the answered waiters are woken, once, each with its own reply; a lost request is
    reported written exactly when its bytes were handed out, so every request the server may
    have received (in part) is reported written, and none is left waiting.
    """

    def __init__(self) -> None:
        super().__init__()
        self._connect()

    def _connect(self) -> None:
        self.ledger = RequestLedger()
        self.waiters: list[Waiter | None] = []  # by request number
        self.requests = b""  # every request's bytes, in queue order
        self.starts: list[int] = []  # offset of each request in ``requests``
        self.handed_out = 0  # requests whose bytes data_to_send returned (oldest first)
        self.on_wire = b""  # what the socket took
        self.answered = 0  # requests the server answered (in order)
        self.in_transit: list[tuple[bytes, int | None]] = []  # reply frames (n, None: push)
        self.cut = 0  # bytes of in_transit[0] already delivered
        self.replied = 0  # requests whose whole reply was delivered
        self.lost = False

    @precondition(lambda self: not self.lost)
    @rule(waited=st.booleans())
    def queue(self, waited: bool) -> None:
        n = len(self.waiters)
        request = encode_command(("ECHO", n))
        waiter = _waiter() if waited else None
        self.ledger.queue(waiter, request)
        self.waiters.append(waiter)
        self.starts.append(len(self.requests))
        self.requests += request
        note(f"queue {n} waited={waited}")

    @precondition(lambda self: not self.lost)
    @rule(taken=st.integers(0, 100))
    def write(self, taken: int) -> None:
        unsent = self.ledger.unsent
        data = self.ledger.data_to_send()
        self.handed_out += unsent
        self.ledger.unsend(data[taken:])
        self.on_wire += data[:taken]
        note(f"write {len(data[:taken])} of {len(data)} bytes")
        assert self.requests.startswith(self.on_wire)  # whole, in order

    @precondition(lambda self: not self.lost)
    @rule(push=st.booleans())
    def server_answers(self, push: bool) -> None:
        whole = sum(1 for n, start in enumerate(self.starts) if self._end(n) <= len(self.on_wire))
        for n in range(self.answered, whole):
            if push:
                self.in_transit.append((b">2\r\n+invalidate\r\n*0\r\n", None))
            self.in_transit.append((b":%d\r\n" % n, n))
        self.answered = whole

    def _end(self, n: int) -> int:
        return self.starts[n + 1] if n + 1 < len(self.starts) else len(self.requests)

    @precondition(lambda self: not self.lost and bool(self.in_transit))
    @rule(size=st.integers(1, 40))
    def receive(self, size: int) -> None:
        piece = b""
        while self.in_transit and size:
            frame, n = self.in_transit[0]
            part = frame[self.cut : self.cut + size]
            piece += part
            size -= len(part)
            self.cut += len(part)
            if self.cut == len(frame):
                self.in_transit.pop(0)
                self.cut = 0
                if n is not None:
                    self.replied = n + 1
        note(f"receive {piece!r}")
        self.ledger.deliver(piece)

    @precondition(lambda self: not self.lost)
    @rule()
    def connection_lost(self) -> None:
        self.ledger.fail_waiters("lost")
        self.lost = True
        for n, waiter in enumerate(self.waiters):
            if waiter is None or n < self.replied:
                continue
            assert waiter.failure is not None, f"request {n} left waiting"
            assert waiter.failure.written == (n < self.handed_out)
            if self.starts[n] < len(self.on_wire):
                assert waiter.failure.written, f"request {n} may have run: must say written"

    @precondition(lambda self: self.lost)
    @rule()
    def reconnect(self) -> None:
        self._connect()  # a new connection: a new ledger

    @invariant()
    def exactly_the_answered_waiters_have_their_own_reply(self) -> None:
        for n, waiter in enumerate(self.waiters):
            if waiter is None:
                continue
            assert _sets(waiter) <= 1
            if n < self.replied:
                assert waiter.event.is_set()
                assert waiter.failure is None
                assert waiter.reply == n, f"request {n} got the reply {waiter.reply!r}"
            elif not self.lost:
                assert not waiter.event.is_set()

    @invariant()
    def the_ledger_counts_what_is_due(self) -> None:
        if not self.lost:
            assert self.ledger.waiting == len(self.waiters) - self.replied
            assert self.ledger.unsent == len(self.waiters) - self.handed_out


TestRequestLedgerMachine = RequestLedgerMachine.TestCase
TestRequestLedgerMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


@settings(deadline=None)
@given(
    replies=st.lists(st.integers(0, 10**6), min_size=1, max_size=20),
    cuts=st.lists(st.integers(1, 30), max_size=30),
)
def test_replies_in_any_pieces_reach_their_waiters(replies: list[int], cuts: list[int]) -> None:
    ledger = RequestLedger()
    waiters = [_waiter() for _ in replies]
    for waiter in waiters:
        ledger.queue(waiter, b"x")
    ledger.data_to_send()
    wire = b"".join(b":%d\r\n" % r for r in replies)
    completed = 0
    for cut in [*cuts, len(wire)]:
        piece, wire = wire[:cut], wire[cut:]
        completed += ledger.deliver(piece)
    assert completed == len(replies)
    assert [w.reply for w in waiters] == replies
