"""Two replicas of one replicated map, in one process, on a throwaway local server.

Run it with ``python examples/rmap_demo.py`` (Trio) or ``python examples/rmap_demo.py
--asyncio``. A write made through one replica shows up in the other; reads are local.
Set ``PULSE_REDIS_URL`` to use a running server instead of an embedded one.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator

import anyio

import pulse_trio
from pulse_trio import rmap


@contextlib.asynccontextmanager
async def server_url() -> AsyncIterator[str]:
    """The server named by ``PULSE_REDIS_URL``, else an embedded one."""
    url = os.environ.get("PULSE_REDIS_URL")
    if url:
        yield url
    else:
        async with pulse_trio.embedded() as embedded_url:
            print(f"started an embedded server at {embedded_url}")
            yield embedded_url


async def main() -> None:
    """Join one map twice, write through one replica and watch the other."""
    async with (
        server_url() as url,
        pulse_trio.connect(url) as client,
        rmap.join(client, "demo:config") as alice,
        rmap.join(client, "demo:config") as bob,
        bob.subscribe() as changes,
    ):
        await alice.reset()
        print("alice sets feature=on and waits until her own replica shows it")
        await alice.set_and_wait("feature", "on")
        await alice.append_values("regions", "eu-west", "us-east")
        hits = await alice.inc("hits", 3)
        print(f"alice: hits is now {hits}")

        with anyio.fail_after(5):
            while bob.get("hits") != "3":
                await changes.__anext__()  # woken after each change applied to bob's copy
        print(f"bob sees (read locally, no Redis round trip): {bob.map()}")
        print(f"bob reads regions as a list: {bob.get_values('regions')}")
        print(f"bob's replica is at revision {bob.revision}")
        assert bob.get("feature") == "on"
        await bob.destroy()
    print("done: the replicas were left and the server stopped")


if __name__ == "__main__":
    anyio.run(main, backend="asyncio" if "--asyncio" in sys.argv else "trio")
