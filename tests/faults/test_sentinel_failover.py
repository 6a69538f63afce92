"""The three packages through a Sentinel failover: one primary, one replica, three sentinels
(quorum 2); the primary is SIGKILLed, the sentinels promote the replica, every package goes on
and nothing acknowledged (and replicated) is lost."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import anyio.abc
import pytest

import pulse_trio
from pulse_trio import EmbeddedServer
from pulse_trio._embedded import free_port

from ._load import TRANSIENT, deployment, keys_of

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("redis-sentinel") is None, reason="needs redis-sentinel"),
]

SERVICE = "pulse-faults"


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    with anyio.fail_after(timeout):
        while True:
            try:
                if await condition():
                    return
            except TRANSIENT:
                pass
            await anyio.sleep(0.1)


@contextlib.asynccontextmanager
async def _sentinels(
    directory: Path, primary: EmbeddedServer, count: int
) -> AsyncIterator[list[int]]:
    """``count`` sentinels watching ``primary`` (quorum: a majority); yields their ports."""
    ports = [free_port() for _ in range(count)]
    processes: list[anyio.abc.Process] = []
    try:
        for i, port in enumerate(ports):
            config = directory / f"sentinel{i}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} {count // 2 + 1}\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
            )
            processes.append(
                await anyio.open_process(
                    ["redis-sentinel", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        yield ports
    finally:
        with anyio.CancelScope(shield=True):
            for process in processes:
                process.terminate()
            for process in processes:
                with anyio.move_on_after(5):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await process.aclose()


async def test_every_package_survives_a_sentinel_failover(tmp_path: Path, unique: str) -> None:
    async with (
        EmbeddedServer(extra_args=["--repl-diskless-sync-delay", "0"]) as primary,
        EmbeddedServer(extra_args=["--replicaof", "127.0.0.1", str(primary.port)]) as replica,
    ):
        try:
            async with pulse_trio.connect(replica.url) as r:

                async def linked() -> bool:
                    info: bytes = await r.execute("INFO", "replication")
                    return b"master_link_status:up" in info

                await _until(linked)
            async with _sentinels(tmp_path, primary, 3) as ports:

                async def ready() -> bool:  # every sentinel knows the replica and the others
                    for port in ports:
                        async with pulse_trio.connect(
                            f"redis://127.0.0.1:{port}", connect_timeout=0.5
                        ) as s:
                            info = await s.execute("SENTINEL", "MASTER", SERVICE)
                            fields = (
                                info
                                if isinstance(info, dict)
                                else dict(zip(info[::2], info[1::2], strict=True))
                            )
                            if int(fields[b"num-slaves"]) < 1:
                                return False
                            if int(fields[b"num-other-sentinels"]) < len(ports) - 1:
                                return False
                    return True

                await _until(ready)
                url = f"redis+sentinel://127.0.0.1:{ports[0]}/{SERVICE}"
                async with (
                    pulse_trio.connect(url, command_timeout=2.0, connect_timeout=1.0) as client,
                    deployment(client, unique) as d,
                ):
                    await d.write(12, "before")
                    for key in keys_of(unique):
                        assert await client.execute("WAIT", 1, 5000, key=key) == 1
                    await primary.kill()
                    with anyio.fail_after(60):
                        await d.write(12, "during")  # retried until the replica is primary
                    role = await client.execute("ROLE")
                    assert role[0] == b"master"
                    async with pulse_trio.connect(f"redis://127.0.0.1:{ports[1]}") as s:
                        address = await s.execute("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                        assert int(address[1]) == replica.port
                    await d.check_nothing_lost()
                    await d.write(4, "after")
                    await d.check_nothing_lost()
        finally:
            with anyio.CancelScope(shield=True):
                await replica.kill()  # a graceful stop would wait for replicas
                await primary.kill()
