"""Least privilege: each package's core operations run as the user of docs/transport.md's
``ACL SETUSER`` line; a user missing one permission gets a ``RedisCommandError`` naming the
denied command from the call that needed it (not a hang, not a dead background task)."""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import pulse_trio
from pulse_trio import pool, rmap, streaming
from pulse_trio._boundary import leaves

from ..pool._helpers import Recorder

pytestmark = pytest.mark.anyio

DOCS = Path(__file__).resolve().parents[2] / "docs"
PASSWORD = "faults-secret"


def documented_rules() -> list[str]:
    """The rules of the documented ``ACL SETUSER`` line (after the user name)."""
    text = (DOCS / "transport.md").read_text()
    line = next(x for x in text.splitlines() if x.startswith("redis-cli ACL SETUSER "))
    rules = shlex.split(line)[4:]
    return [r for r in rules if not r.startswith(">") and r != "on"]


@pytest.fixture
async def acl_url(
    server_url: str, unique: str, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """A URL of the session server as a new user with the documented rules, less the rules
    named by the test's ``deny`` parameter (``-command`` or a removed rule)."""
    deny: list[str] = getattr(request, "param", [])
    rules = [r for r in documented_rules() if r not in deny]
    rules += [d for d in deny if d.startswith("-")]
    user = f"acl-{unique}"
    async with pulse_trio.connect(server_url) as admin:
        await admin.execute("ACL", "SETUSER", user, "reset", "on", f">{PASSWORD}", *rules)
        try:
            yield server_url.replace("redis://", f"redis://{user}:{PASSWORD}@", 1)
        finally:
            with anyio.CancelScope(shield=True):
                await admin.execute("ACL", "DELUSER", user)


async def test_the_documented_user_runs_every_package(acl_url: str, unique: str) -> None:
    async with pulse_trio.connect(acl_url) as client:
        with pytest.raises(pulse_trio.RedisCommandError, match=r"(?i)noperm|permission"):
            await client.execute("FLUSHALL")  # it is restricted
        async with rmap.join(client, unique) as a, rmap.join(client, unique) as b:
            await a.set_and_wait("k", "v")
            assert await b.inc("n") == 1
            await b.append_values("l", "x", "y")
            assert await a.test_and_set("k", "v", "w") == "v"
            await a.delete("n")
            with anyio.fail_after(10):
                while b.map() != a.map() or set(b.map()) != {"k", "l"}:
                    await anyio.sleep(0.02)
            assert b.get("k") == "w"
        stream = streaming.Stream(client, unique)
        async with (
            stream.open_reader(start=streaming.OLDEST) as reader,
            stream.open_sink("s", start=streaming.OLDEST) as sink,
        ):
            ids = [await stream.add("e", bytes([i])) for i in range(3)]
            with anyio.fail_after(10):
                got = [(await reader.__anext__()).id for _ in ids]
                assert got == ids
                for _ in ids:
                    await sink.ack(await sink.__anext__())
            info = await stream.info()
            assert info.sinks[0].pending == 0
        handler = Recorder()
        async with pool.open_node(client, unique, worker_ttl=5.0) as node:
            await node.add_worker(handler)
            await node.dispatch_job("j", b"p")
            await node.notify_worker("j", b"n")
            assert ("j", b"n") in handler.notes
            await node.stop_job("j")
            assert handler.running == {}
            async with node.open_ticker("t", 0.05) as ticker:
                with anyio.fail_after(10):
                    await ticker.__anext__()


@pytest.mark.parametrize("acl_url", [[r for r in documented_rules() if r.startswith("&")]],
                         indirect=True)  # fmt: skip
async def test_a_map_join_without_the_channel_says_so(acl_url: str, unique: str) -> None:
    async with pulse_trio.connect(acl_url) as client:
        with anyio.fail_after(10), pytest.raises(pulse_trio.RedisCommandError) as info:
            async with rmap.join(client, unique):
                pass
    assert "subscribe" in str(info.value).lower() or "channel" in str(info.value).lower()
    assert "noperm" in repr(info.value.__cause__).lower()


@pytest.mark.parametrize("acl_url", [["-xreadgroup"]], indirect=True)
async def test_a_sink_without_xreadgroup_says_so(acl_url: str, unique: str) -> None:
    async with pulse_trio.connect(acl_url) as client:
        stream = streaming.Stream(client, unique)
        await stream.add("e", b"x")
        # The read runs in the sink's background task: as documented (docs/transport.md,
        # ACL), the denial is not retried and ends the sink's block, in an exception group.
        with anyio.fail_after(10), pytest.raises(BaseExceptionGroup) as info:
            async with stream.open_sink("s", start=streaming.OLDEST) as sink:
                await sink.__anext__()
    denied = [e for e in leaves(info.value) if isinstance(e, pulse_trio.RedisCommandError)]
    assert len(denied) == 1
    assert "xreadgroup" in _flat(denied[0]).lower()


@pytest.mark.parametrize("acl_url", [["-evalsha"]], indirect=True)
async def test_a_pool_node_without_evalsha_says_so(acl_url: str, unique: str) -> None:
    async with pulse_trio.connect(acl_url) as client:
        with anyio.fail_after(10), pytest.raises(pulse_trio.RedisCommandError) as info:
            async with pool.open_node(client, unique):
                pass
    assert "evalsha" in _flat(info.value).lower()


@pytest.mark.parametrize("acl_url", [["-xadd"]], indirect=True)
async def test_a_stream_add_without_xadd_says_so(acl_url: str, unique: str) -> None:
    """XADD runs inside the add script: the denial comes back from the script."""
    async with pulse_trio.connect(acl_url) as client:
        with anyio.fail_after(10), pytest.raises(pulse_trio.RedisCommandError) as info:
            await streaming.Stream(client, unique).add("e", b"x")
    assert "xadd" in _flat(info.value).lower()


def _flat(exc: BaseException) -> str:
    """The message of ``exc`` and its causes."""
    parts = []
    current: BaseException | None = exc
    while current is not None:
        parts.append(str(current))
        current = current.__cause__
    return " | ".join(parts)
