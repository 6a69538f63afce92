"""Dedicated connections: blocking commands (pooled, cancellable) and subscriptions."""

from __future__ import annotations

import anyio
import pytest

from pulse_trio._redis import Client, Message, Resubscribed, open_client

pytestmark = pytest.mark.anyio


async def _wait_blocked(client: Client, client_id: int) -> None:
    """Poll until the server reports connection ``client_id`` blocked (flags contain b)."""
    with anyio.fail_after(5):
        while True:
            info = await client.execute("CLIENT", "LIST", "ID", client_id)
            if b" flags=b " in info:
                return
            await anyio.sleep(0.005)


async def test_blocking_read_returns_when_data_arrives(rclient: Client, unique: str) -> None:
    stream = f"{unique}:s"
    async with rclient.blocking() as conn, anyio.create_task_group() as tg:
        result: list[object] = []

        async def read() -> None:
            result.append(await conn.execute("XREAD", "BLOCK", 0, "STREAMS", stream, "$"))

        tg.start_soon(read)
        assert conn.client_id is not None
        await _wait_blocked(rclient, conn.client_id)
        await rclient.execute("XADD", stream, "*", "f", "v")
    [reply] = result
    assert isinstance(reply, dict)  # RESP3: {stream: [[id, [f, v]]]}
    [(name, entries)] = reply.items()
    assert name == stream.encode()
    assert entries[0][1] == [b"f", b"v"]


async def test_cancelled_blocking_read_is_unblocked_and_the_connection_kept(
    rclient: Client, unique: str
) -> None:
    stream = f"{unique}:s"
    async with rclient.blocking() as conn:
        with anyio.CancelScope() as scope:

            async def cancel_when_blocked() -> None:
                assert conn.client_id is not None
                await _wait_blocked(rclient, conn.client_id)
                scope.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(cancel_when_blocked)
                await conn.execute("XREAD", "BLOCK", 0, "STREAMS", stream, "$")
        assert scope.cancelled_caught
        assert not conn.closed  # freed with CLIENT UNBLOCK, not discarded
        # If the XREAD were still blocked it would swallow this XADD and answer the ECHO.
        await rclient.execute("XADD", stream, "*", "f", "v")
        assert await conn.execute("ECHO", "in step") == b"in step"
        first = conn
    async with rclient.blocking() as again:
        assert again is first  # back in the pool and lent again


async def test_blocking_connections_are_bounded(server_url: str) -> None:
    async with open_client(server_url, max_blocking_connections=2) as client:
        entered = 0
        release = anyio.Event()

        async def hold() -> None:
            nonlocal entered
            async with client.blocking() as conn:
                entered += 1
                await release.wait()
                assert await conn.execute("PING") == b"PONG"

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(hold)
            with anyio.fail_after(5):
                while entered < 2:
                    await anyio.sleep(0.005)
            await anyio.sleep(0.05)  # give the third a chance to (wrongly) get in
            assert entered == 2
            release.set()
        assert entered == 3


async def test_blocking_timeout_defaults_to_the_block_duration(rclient: Client) -> None:
    async with rclient.blocking() as conn:
        with anyio.fail_after(5):
            assert await conn.execute("XREAD", "BLOCK", 50, "STREAMS", "nothing-here", "$") is None


async def test_subscription_delivers_messages_in_order(rclient: Client, unique: str) -> None:
    async with rclient.subscribe(f"{unique}:a", patterns=[f"{unique}:p*"]) as sub:
        for i in range(20):
            await rclient.execute("PUBLISH", f"{unique}:a", i)
        await rclient.execute("PUBLISH", f"{unique}:pq", "by pattern")
        got = []
        with anyio.fail_after(5):
            async for item in sub:
                got.append(item)
                if len(got) == 21:
                    break
        assert got[:20] == [Message(f"{unique}:a".encode(), str(i).encode()) for i in range(20)]
        assert got[20] == Message(f"{unique}:pq".encode(), b"by pattern", f"{unique}:p*".encode())
        await sub.ping()
        await sub.subscribe(f"{unique}:b")
        await sub.unsubscribe(f"{unique}:a")
        with anyio.fail_after(5):
            while await rclient.execute("PUBSUB", "NUMSUB", f"{unique}:b") != [
                f"{unique}:b".encode(),
                1,
            ]:
                await anyio.sleep(0.005)
        await rclient.execute("PUBLISH", f"{unique}:a", "not for us")
        await rclient.execute("PUBLISH", f"{unique}:b", "for us")
        with anyio.fail_after(5):
            assert await sub.__anext__() == Message(f"{unique}:b".encode(), b"for us")


async def test_subscription_resubscribes_after_a_kill_and_says_so(
    rclient: Client, unique: str
) -> None:
    channel = f"{unique}:c"
    async with rclient.subscribe(channel) as sub:
        killed = await rclient.execute("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed >= 1
        with anyio.fail_after(10):
            item = await sub.__anext__()
        assert item == Resubscribed(1)
        assert sub.reconnects == 1
        await rclient.execute("PUBLISH", channel, "after")
        with anyio.fail_after(5):
            assert await sub.__anext__() == Message(channel.encode(), b"after")


async def test_errors_of_the_block_propagate_unwrapped(rclient: Client, server_url: str) -> None:
    with pytest.raises(KeyError, match="from the block"):
        async with rclient.subscribe("any"):
            raise KeyError("from the block")
    with pytest.raises(LookupError, match="from the client block"):
        async with open_client(server_url):
            raise LookupError("from the client block")


async def test_slow_consumer_is_not_mistaken_for_a_dead_connection(
    server_url: str, unique: str
) -> None:
    channel = f"{unique}:c"
    async with (
        open_client(server_url, command_timeout=0.5, health_check_interval=0.05) as client,
        client.subscribe(channel, buffer_size=1) as sub,
    ):
        for i in range(50):
            await client.execute("PUBLISH", channel, i)
        # The reader is held up by the full buffer before the PING is sent (on a loaded
        # machine it may not have read anything yet, and then a PING timeout is right).
        with anyio.fail_after(5):
            while not sub._delivering:
                await anyio.sleep(0.005)
        async with anyio.create_task_group() as tg:
            tg.start_soon(sub.ping)  # answered only once the reader can read again
            # The consumer is slow on purpose: many health-check intervals and PING
            # timeouts pass while the subscriber cannot deliver.
            await anyio.sleep(1.5)
            got = []
            with anyio.fail_after(5):
                async for item in sub:
                    got.append(item)
                    if len(got) == 50:
                        break
        assert got == [Message(channel.encode(), str(i).encode()) for i in range(50)]
        assert sub.reconnects == 0


async def test_a_handler_takes_messages_in_order_with_the_consumer(
    rclient: Client, unique: str
) -> None:
    """The handler runs only for what the waiting consumer would receive next: one log of
    what the handler and the consumer each took is in publication order."""
    channel = f"{unique}:c"
    log: list[tuple[str, int]] = []

    def handler(message: Message) -> bool:
        number = int(message.data)
        if number % 5 == 0:
            return False  # left to the consumer (which then gets the next ones meanwhile)
        log.append(("handler", number))
        return True

    async def consume() -> None:
        async for item in sub:
            assert isinstance(item, Message)
            number = int(item.data)
            log.append(("consumer", number))
            if number % 2:
                await anyio.sleep(0.001)  # busy: messages pile up in the buffer meanwhile

    async with rclient.subscribe(channel) as sub, anyio.create_task_group() as tg:
        sub.set_handler(handler)
        tg.start_soon(consume)
        # One at a time, the consumer waiting: the handler takes every message it accepts.
        with anyio.fail_after(5):
            while not sub._consumer_idle:
                await anyio.sleep(0.001)
        for number in (1, 2, 3):
            await rclient.execute("PUBLISH", channel, number)
            with anyio.fail_after(5):
                while len(log) < number:
                    await anyio.sleep(0.001)
        assert log == [("handler", 1), ("handler", 2), ("handler", 3)]
        # Bursts, in one write: some go to the handler, some to the consumer, none out of order.
        for first in range(4, 400, 50):
            await rclient.execute_many(
                [("PUBLISH", channel, n) for n in range(first, min(400, first + 50))]
            )
        with anyio.fail_after(10):
            while len(log) < 399:
                await anyio.sleep(0.005)
        tg.cancel_scope.cancel()
    assert [number for _, number in log] == list(range(1, 400))
    assert {who for who, _ in log} == {"handler", "consumer"}
    assert all(who == "consumer" for who, number in log if number % 5 == 0)


async def test_a_failing_handler_is_removed_and_its_error_raised_in_order(
    rclient: Client, unique: str
) -> None:
    channel = f"{unique}:c"
    calls: list[bytes] = []

    def handler(message: Message) -> bool:
        calls.append(message.data)
        raise ValueError(f"handler failed on {message.data!r}")

    async with rclient.subscribe(channel) as sub:
        sub.set_handler(handler)

        async def publish() -> None:
            with anyio.fail_after(5):
                while not sub._consumer_idle:
                    await anyio.sleep(0.001)
            await rclient.execute_many([("PUBLISH", channel, "a"), ("PUBLISH", channel, "b")])

        async with anyio.create_task_group() as tg:
            tg.start_soon(publish)
            with pytest.raises(ValueError, match="handler failed on b'a'"), anyio.fail_after(5):
                await sub.__anext__()
        # Removed: the next message goes to the consumer, the subscription is still up.
        with anyio.fail_after(5):
            assert await sub.__anext__() == Message(channel.encode(), b"b")
        assert calls == [b"a"]
        await sub.ping()


async def test_resubscribed_goes_to_the_consumer_past_a_handler(
    rclient: Client, unique: str
) -> None:
    channel = f"{unique}:c"
    taken: list[bytes] = []

    def handler(message: Message) -> bool:
        taken.append(message.data)
        return True

    async with rclient.subscribe(channel) as sub:
        sub.set_handler(handler)
        async with anyio.create_task_group() as tg:

            async def kill() -> None:
                with anyio.fail_after(5):
                    while not sub._consumer_idle:
                        await anyio.sleep(0.001)
                await rclient.execute("PUBLISH", channel, "before")
                assert await rclient.execute("CLIENT", "KILL", "TYPE", "pubsub") >= 1

            tg.start_soon(kill)
            with anyio.fail_after(10):
                assert await sub.__anext__() == Resubscribed(1)
        assert taken == [b"before"]
        sub.set_handler(None)
        await rclient.execute("PUBLISH", channel, "after")
        with anyio.fail_after(5):
            assert await sub.__anext__() == Message(channel.encode(), b"after")
