"""The multiplexed connection's fast path: a lone caller writes its request and reads its reply
itself (plain TCP and Unix sockets, on Trio and on asyncio), handing reading back to the reader
task when it is done or cancelled."""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from pulse_trio._redis import Client, ConnectionLostError, open_client
from pulse_trio._redis._client import Standalone
from pulse_trio._redis._multiplexed import FRESH
from pulse_trio.testing import EmbeddedServer

from .._util import Turns

pytestmark = pytest.mark.anyio

# Busy for ARGV[1] microseconds, then returns ARGV[2]: a reply that takes a while.
_SLOW = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
while true do
    local n = redis.call('TIME')
    if n[1] * 1000000 + n[2] - start >= tonumber(ARGV[1]) then break end
end
return ARGV[2]
"""


def _node(client: Client) -> Any:
    topology = client._topology
    assert isinstance(topology, Standalone)
    return topology.node


def _fast(mux: Any) -> bool:
    return mux._io is not None


async def _kill(server_url: str, client_id: int) -> None:
    async with open_client(server_url) as killer:
        assert await killer.execute("CLIENT", "KILL", "ID", client_id) == 1


async def test_lone_callers_read_their_own_replies(rclient: Client, unique: str) -> None:
    mux = await _node(rclient).multiplexed()
    leads, writes = mux.leads, mux.writes
    for i in range(50):
        assert await rclient.execute("INCR", unique) == i + 1
    assert await rclient.execute_many([["INCR", unique], ["GET", unique]]) == [51, b"51"]
    assert _fast(mux)
    assert mux.leads - leads == 51
    assert mux._read_wanted is not None  # the reader task is parked
    assert mux.writes - writes == 51
    assert mux.waiting == 0


@pytest.mark.parametrize("pipeline", [False, True])
async def test_connection_killed_while_idle_is_replaced_before_a_write(
    rclient: Client, server_url: str, unique: str, pipeline: bool
) -> None:
    """Nobody reads an idle connection on the fast path: the server closing it is found out
    before the next write, which goes (once) to a new connection."""
    node = _node(rclient)
    mux = await node.multiplexed()
    connects = node.connects
    assert await rclient.execute("INCR", f"{unique}:n") == 1
    assert await rclient.execute("XADD", f"{unique}:s", "*", "f", "v")
    await _kill(server_url, mux.client_id)
    await anyio.sleep(0.1)  # the FIN has arrived
    if pipeline:
        replies = await rclient.execute_many(
            [["INCR", f"{unique}:n"], ["XADD", f"{unique}:s", "*", "f", "v"]]
        )
        assert replies[0] == 2
    else:
        assert await rclient.execute("INCR", f"{unique}:n") == 2
        assert await rclient.execute("XADD", f"{unique}:s", "*", "f", "v")
    assert mux.closed
    assert node.connects == connects + 1
    assert await rclient.execute("GET", f"{unique}:n") == b"2"  # executed exactly once
    assert await rclient.execute("XLEN", f"{unique}:s") == 2


async def test_idle_connection_killed_then_concurrent_callers(
    rclient: Client, server_url: str, unique: str
) -> None:
    node = _node(rclient)
    mux = await node.multiplexed()
    connects = node.connects
    await rclient.execute("PING")
    await _kill(server_url, mux.client_id)
    await anyio.sleep(0.1)
    results: dict[int, Any] = {}

    async def one(i: int) -> None:
        results[i] = await rclient.execute("INCR", f"{unique}:{i % 3}")

    async with anyio.create_task_group() as tg:
        for i in range(30):
            tg.start_soon(one, i)
    assert sorted(results.values()) == sorted(list(range(1, 11)) * 3)
    assert node.connects == connects + 1
    for k in range(3):
        assert await rclient.execute("GET", f"{unique}:{k}") == b"10"


async def test_connection_killed_while_a_lone_caller_reads(
    rclient: Client, server_url: str, unique: str
) -> None:
    """EOF while the caller itself reads fails it like the reader task would (written=True)
    and the next request goes to a new connection."""
    node = _node(rclient)
    mux = await node.multiplexed()
    connects = node.connects
    await rclient.execute("SET", unique, 0)
    async with open_client(server_url) as admin:
        assert await admin.execute("CLIENT", "PAUSE", 5000, "WRITE") == b"OK"
        try:
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:

                    async def kill_when_waiting() -> None:
                        while mux.waiting == 0:
                            await anyio.sleep(0.005)
                        await anyio.sleep(0.05)  # the INCR is at the server, paused
                        await admin.execute("CLIENT", "KILL", "ID", mux.client_id)

                    tg.start_soon(kill_when_waiting)
                    with pytest.raises(ConnectionLostError) as info:
                        await rclient.execute("INCR", unique)
        finally:
            await admin.execute("CLIENT", "UNPAUSE")
    assert info.value.written
    assert mux.closed
    assert await rclient.execute("GET", unique) == b"0"  # killed before it ran
    assert await rclient.execute("INCR", unique) == 1
    assert node.connects == connects + 1


async def test_lone_caller_cancelled_while_reading(rclient: Client, unique: str) -> None:
    """The cancelled caller hands reading back: its late reply is read and dropped, and the
    next callers (sequential, then concurrent) get their own replies on the same connection."""
    node = _node(rclient)
    mux = await node.multiplexed()
    connects = node.connects
    results: dict[int, Any] = {}

    async def one(i: int) -> None:
        results[i] = await rclient.execute("ECHO", f"{unique}-{i}")

    for round_ in range(3):
        leads = mux.leads
        with anyio.move_on_after(0.05) as scope:
            await rclient.execute("EVAL", _SLOW, 0, 200_000, "late")
        assert scope.cancelled_caught
        assert mux.leads == leads + 1  # it was reading the socket itself
        assert mux.waiting == 1  # its reply is still due
        if round_ == 2:
            with anyio.fail_after(5):  # read and dropped without any other request
                while mux.waiting:
                    await anyio.sleep(0.01)
        if round_ == 0:
            assert await rclient.execute("ECHO", "mine") == b"mine"
        else:
            results.clear()
            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(one, i)
            assert results == {i: f"{unique}-{i}".encode() for i in range(20)}
        assert mux.waiting == 0
        assert await rclient.execute("ECHO", "after") == b"after"
    assert node.connects == connects
    assert await node.multiplexed() is mux


async def test_reading_handed_back_for_requests_queued_meanwhile(rclient: Client) -> None:
    """A lone caller reads; another request is queued meanwhile and answered after the first
    reply: the reader task reads it, with no further request to wake it."""
    node = _node(rclient)
    mux = await node.multiplexed()
    leads = mux.leads
    got: dict[str, Any] = {}

    async def call(name: str, micros: int) -> None:
        got[name] = await rclient.execute("EVAL", _SLOW, 0, micros, name)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "first", 50_000)
            await anyio.sleep(0.01)
            tg.start_soon(call, "second", 100_000)
    assert got == {"first": b"first", "second": b"second"}
    assert mux.leads == leads + 1
    assert mux.waiting == 0
    assert await node.multiplexed() is mux


async def test_lone_pipeline_cancelled_while_reading(rclient: Client, unique: str) -> None:
    node = _node(rclient)
    mux = await node.multiplexed()
    with anyio.move_on_after(0.05):
        await rclient.execute_many(
            [["ECHO", "a"], ["EVAL", _SLOW, 0, 200_000, "late"], ["ECHO", "b"]]
        )
    assert await rclient.execute_many([["ECHO", "c"], ["ECHO", "d"]]) == [b"c", b"d"]
    assert mux.waiting == 0
    assert await node.multiplexed() is mux


@pytest.mark.parametrize("seed", range(6))
async def test_sequential_and_concurrent_callers_mixed(
    rclient: Client, unique: str, seed: int
) -> None:
    """Lone callers, bursts of concurrent ones, pipelines and cancellations interleaved: every
    caller gets its own replies, in order, on one connection; leadership changes hands."""
    rng = random.Random(seed)
    node = _node(rclient)
    mux = await node.multiplexed()
    connects = node.connects
    leads, requests = mux.leads, mux.requests
    counts: dict[int, int] = {}

    async def worker(w: int) -> None:
        key = f"{unique}:{w}"
        counts[w] = 0
        for _ in range(rng.randint(5, 40)):
            action = rng.random()
            if action < 0.5:
                counts[w] += 1
                assert await rclient.execute("INCR", key) == counts[w]
            elif action < 0.7:
                counts[w] += 2
                replies = await rclient.execute_many([["INCR", key], ["INCR", key], ["GET", key]])
                assert replies == [counts[w] - 1, counts[w], str(counts[w]).encode()]
            elif action < 0.85:
                payload = rng.randbytes(rng.randint(0, 100))
                with anyio.CancelScope() as scope:
                    if rng.random() < 0.5:
                        scope.cancel()
                    assert await rclient.execute("ECHO", payload) == payload
            else:
                await anyio.sleep(rng.random() / 200)
            if rng.random() < 0.3:
                await anyio.lowlevel.checkpoint()

    for _ in range(4):
        async with anyio.create_task_group() as tg:
            for w in range(rng.choice([1, 1, 2, 8])):
                tg.start_soon(worker, w)
        for w, count in counts.items():
            if count:
                assert await rclient.execute("GET", f"{unique}:{w}") == str(count).encode()
            await rclient.execute("DEL", f"{unique}:{w}")
        counts.clear()
    assert node.connects == connects
    assert mux.waiting == 0
    assert 0 < mux.leads - leads < mux.requests - requests


async def test_idle_connection_closed_by_the_server_is_seen_without_a_request(
    rclient: Client, server_url: str
) -> None:
    """The look before a write sees an idle connection closed (on asyncio TCP the transport is
    kept reading while nobody receives, so its protocol learns of the end of stream)."""
    node = _node(rclient)
    mux = await node.multiplexed()
    assert await rclient.execute("PING") == b"PONG"
    assert mux._read_wanted is not None  # idle: nobody reads
    assert mux._io.alive()
    await _kill(server_url, mux.client_id)
    with anyio.fail_after(5):
        while mux._io.alive():
            await anyio.sleep(0.01)
    assert not mux.closed  # nobody noticed yet: the next request will
    assert await rclient.execute("PING") == b"PONG"
    assert mux.closed
    assert await node.multiplexed() is not mux


async def test_the_look_before_a_write_is_skipped_right_after_a_reply(rclient: Client) -> None:
    """A connection that answered an instant ago is in use, not idle: sequential requests do
    not pay a peek syscall each; one idle for longer than FRESH is looked at again."""
    node = _node(rclient)
    mux = await node.multiplexed()
    if mux._io is None:
        pytest.skip("no fast path on this stream (TLS): nothing is looked at")
    io = mux._io

    class Counting:
        looks = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(io, name)

        def alive(self) -> bool:
            Counting.looks += 1
            return bool(io.alive())

    mux._io = Counting()
    for _ in range(100):
        await rclient.execute("PING")
    # Back to back, nearly every request follows a reply by less than FRESH (a scheduling
    # hiccup of the machine may make a few gaps longer).
    assert Counting.looks < 50, Counting.looks
    before = Counting.looks
    await anyio.sleep(FRESH * 20)
    await rclient.execute("PING")
    assert Counting.looks == before + 1  # idle for a while: looked at before the write


@pytest.fixture
async def unix_url() -> AsyncIterator[str]:
    """A server of this test's own listening on a Unix socket (short path: sun_path limit)."""
    directory = Path(tempfile.mkdtemp(prefix="pt-"))
    path = directory / "r.sock"
    try:
        async with EmbeddedServer(
            extra_args=["--unixsocket", str(path), "--unixsocketperm", "700"]
        ):
            yield f"unix://{path}"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def test_unix_socket_fast_path(unix_url: str, unique: str) -> None:
    """Unix sockets take the fast path too: lone callers lead, concurrent ones do not, an idle
    connection closed by the server is replaced before a non-idempotent write."""
    async with open_client(unix_url) as client:
        node = _node(client)
        mux = await node.multiplexed()
        assert _fast(mux)
        assert await client.execute("PING") == b"PONG"  # the reader task has parked since
        leads = mux.leads
        for i in range(20):
            assert await client.execute("INCR", unique) == i + 1
        assert mux.leads - leads == 20
        results: dict[int, Any] = {}

        async def one(i: int) -> None:
            results[i] = await client.execute("ECHO", f"{unique}-{i}")

        async with anyio.create_task_group() as tg:
            for i in range(30):
                tg.start_soon(one, i)
        assert results == {i: f"{unique}-{i}".encode() for i in range(30)}
        with anyio.move_on_after(0.05):
            await client.execute("EVAL", _SLOW, 0, 200_000, "late")
        assert await client.execute("ECHO", "mine") == b"mine"
        async with open_client(unix_url) as killer:
            assert await killer.execute("CLIENT", "KILL", "ID", mux.client_id) == 1
        await anyio.sleep(0.1)
        connects = node.connects
        assert await client.execute("INCR", unique) == 21
        assert mux.closed
        assert node.connects == connects + 1
        assert await client.execute("GET", unique) == b"21"  # executed exactly once


# -- polling for the reply -----------------------------------------------------------------


class _ScriptedIO:
    """What the poller reads: nothing until ``answer_after`` polls, then one reply."""

    def __init__(self, answer_after: int | None) -> None:
        self.answer_after = answer_after
        self.polls = 0

    def poll(self, size: int) -> bytes | None:
        self.polls += 1
        if self.answer_after is not None and self.polls > self.answer_after:
            return b"+OK\r\n"
        return None


def _poller(io: _ScriptedIO, busy: list[bool]) -> Any:
    from pulse_trio._redis._fast_io import Poller

    return Poller(
        io,  # type: ignore[arg-type]
        lambda: busy[0],
        anyio.lowlevel.checkpoint,
        anyio.lowlevel.checkpoint_if_cancelled,
    )


async def test_the_poller_stops_polling_a_connection_that_answers_late() -> None:
    io = _ScriptedIO(answer_after=None)
    poller = _poller(io, [False])
    for _ in range(poller.MISSES):
        started = anyio.current_time()
        assert await poller.receive(100) is None
        assert anyio.current_time() - started >= poller.BUDGET  # it polled the whole budget
    polls = io.polls
    assert await poller.receive(100) is None  # resting: no poll at all
    assert io.polls == polls
    poller._resume = 0.0  # the rest is over
    io.answer_after = io.polls  # the next poll has the reply
    assert await poller.receive(100) == b"+OK\r\n"
    assert poller._misses == 0


async def test_the_poller_gives_way_to_other_tasks_without_counting_a_miss() -> None:
    io = _ScriptedIO(answer_after=None)
    poller = _poller(io, [True])
    for _ in range(poller.MISSES + 2):
        assert await poller.receive(100) is None
    assert io.polls == poller.MISSES + 2  # one poll each, then the others' turn
    assert poller._misses == 0


async def test_the_poller_spins_first_and_still_yields_every_millisecond() -> None:
    io = _ScriptedIO(answer_after=None)
    poller = _poller(io, [False])
    other = Turns()

    async with anyio.create_task_group() as tg:
        assert await poller.receive(100) is None  # yields: the spin needs a recent yield
        tg.start_soon(other.run)
        while not other.count:
            await anyio.lowlevel.checkpoint()
        io.answer_after = io.polls + 1  # the reply arrives during the spin
        ran = other.count
        poller._yielded = time.perf_counter()  # as if it had just yielded
        assert await poller.receive(100) == b"+OK\r\n"
        assert other.count == ran  # caught by the spin: no scheduling point
        poller._yielded -= poller.MAX_UNYIELDED  # ... but not for longer than this
        io.answer_after = io.polls + 1
        assert await poller.receive(100) == b"+OK\r\n"
        assert other.count > ran  # the loop had its turn first
        with anyio.CancelScope() as scope:
            scope.cancel()
            poller._yielded = time.perf_counter()
            io.answer_after = io.polls
            await poller.receive(100)  # a pending cancellation is raised before the spin
        assert scope.cancelled_caught
        tg.cancel_scope.cancel()


async def test_a_lone_caller_polls_for_its_reply_on_trio(
    rclient: Client, unique: str, anyio_backend: str
) -> None:
    mux = await _node(rclient).multiplexed()
    polled = mux.polled
    for i in range(50):
        assert await rclient.execute("INCR", unique) == i + 1
    if anyio_backend == "trio":
        # A loopback reply takes tens of microseconds: most arrive within the budget.
        assert mux.polled > polled
    else:
        assert mux._poller is None  # the asyncio transport reads the socket itself
        assert mux.polled == polled


async def test_a_caller_cancelled_while_polling_leaves_the_connection_consistent(
    rclient: Client, unique: str
) -> None:
    mux = await _node(rclient).multiplexed()
    for attempt in range(20):
        with anyio.CancelScope() as scope:
            scope.deadline = anyio.current_time() + random.uniform(0, 0.002)
            await rclient.execute("EVAL", _SLOW, 0, 1000, f"slow-{attempt}")
        assert await rclient.execute("SET", unique, attempt) == b"OK"
        assert await rclient.execute("GET", unique) == str(attempt).encode()
    assert not mux.closed
