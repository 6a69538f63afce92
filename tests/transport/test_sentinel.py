"""Sentinel: the client finds the primary through Debian's redis-sentinel and follows a
failover."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from pulse_trio import EmbeddedServer, RedisUnavailableError
from pulse_trio._embedded import free_port
from pulse_trio._redis import ResponseError, open_client

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("redis-sentinel") is None, reason="needs redis-sentinel"),
]

SERVICE = "pulse-primary"


async def _until(condition: Any, timeout: float = 20.0) -> Any:
    with anyio.fail_after(timeout):
        while True:
            try:
                result = await condition()
            except (RedisUnavailableError, ResponseError):
                result = None
            if result:
                return result
            await anyio.sleep(0.1)


@pytest.fixture
async def sentinel_setup(
    tmp_path: Path,
) -> AsyncIterator[tuple[str, EmbeddedServer, EmbeddedServer]]:
    """A primary, its replica and one sentinel watching them; yields the sentinel URL."""
    async with (
        EmbeddedServer(extra_args=["--repl-diskless-sync-delay", "0"]) as primary,
        EmbeddedServer(extra_args=["--replicaof", "127.0.0.1", str(primary.port)]) as replica,
    ):
        async with open_client(replica.url) as r:

            async def linked() -> bool:
                info: bytes = await r.execute("INFO", "replication")
                return b"master_link_status:up" in info

            await _until(linked)
        port = free_port()
        config = tmp_path / "sentinel.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        process = await anyio.open_process(
            ["redis-sentinel", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:

            async def sentinel_knows_replica() -> bool:
                async with open_client(f"redis://127.0.0.1:{port}", connect_timeout=0.5) as s:
                    replicas = await s.execute("SENTINEL", "REPLICAS", SERVICE)
                    return any(
                        int(r[b"port"]) == replica.port and b"s_down" not in r[b"flags"]
                        for r in replicas
                    )

            await _until(sentinel_knows_replica)
            yield f"redis+sentinel://127.0.0.1:{port}/{SERVICE}", primary, replica
        finally:
            with anyio.CancelScope(shield=True):
                process.terminate()
                with anyio.move_on_after(5):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await process.aclose()
                # SIGKILL: a graceful stop waits for replicas (shutdown-timeout); throwaway data.
                await replica.kill()
                await primary.kill()


async def _primary_port(client: Any) -> int:
    role = await client.execute("ROLE")
    if role[0] != b"master":
        return -1
    reply: dict[bytes, bytes] = await client.execute("CONFIG", "GET", "port")  # a RESP3 map
    return int(reply[b"port"])


async def test_finds_the_primary_and_follows_a_failover(
    sentinel_setup: tuple[str, EmbeddedServer, EmbeddedServer], unique: str
) -> None:
    url, primary, replica = sentinel_setup
    async with open_client(url, connect_timeout=1.0, command_timeout=2.0) as client:
        assert await _primary_port(client) == primary.port
        await client.execute("SET", unique, "before")
        sentinel = url.replace("redis+sentinel://", "redis://").rsplit("/", 1)[0]
        async with open_client(sentinel) as s:

            async def failover() -> bool:
                return bool(await s.execute("SENTINEL", "FAILOVER", SERVICE) == b"OK")

            await _until(failover)

            async def promoted() -> bool:
                addr = await s.execute("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                return bool(int(addr[1]) == replica.port)

            await _until(promoted)

        async def on_new_primary() -> bool:
            # Reads only: no READONLY error tells the client; +switch-master does, while
            # the old primary still takes writes (Sentinel converts it ~10 s later).
            return bool(await _primary_port(client) == replica.port)

        await _until(on_new_primary, timeout=8.0)
        await client.execute("SET", unique, "after")
        assert await client.execute("GET", unique) == b"after"
    unknown = url.rsplit("/", 1)[0] + "/no-such-service"
    with pytest.raises(RedisUnavailableError, match="no-such-service"):
        async with open_client(unknown):
            pass
