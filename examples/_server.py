"""The server the examples run on: an embedded one, or ``--redis-url`` / ``PULSE_REDIS_URL``.

Not an example itself: every example starts with ``async with example_client("name") as
client`` so that it can run anywhere. What matters to copy is inside: ``pulse_trio.embedded()``
and ``pulse_trio.connect(url)``.

On a real server each example keeps every name it uses under its own namespace (``"fan_out:"``,
``"signup:"``...), refuses to run if keys of that namespace already exist, and deletes the
keys of its namespace when it ends, so it leaves the server as it found it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import AsyncIterator

import pulse_trio


def _redis_url(description: str | None) -> str | None:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("PULSE_REDIS_URL"),
        help="use this server instead of an embedded one (default: $PULSE_REDIS_URL)",
    )
    return parser.parse_args().redis_url  # type: ignore[no-any-return]


async def _keys(client: pulse_trio.Client, namespace: str) -> list[bytes]:
    """Every key whose name holds ``namespace:`` (SCAN, never KEYS)."""
    found: list[bytes] = []
    cursor = b"0"
    while True:
        cursor, batch = await client.execute("SCAN", cursor, "MATCH", f"*{namespace}:*")
        found.extend(batch)
        if cursor == b"0":
            return found


@contextlib.asynccontextmanager
async def example_client(namespace: str) -> AsyncIterator[pulse_trio.Client]:
    """Yield a client on the example's server; on a real server, clean up afterwards.

    Args:
        namespace: The prefix of every map, stream, sink and pool name the example uses.
    """
    description = sys.modules["__main__"].__doc__
    url = _redis_url(description)
    if url is None:
        async with pulse_trio.embedded() as url, pulse_trio.connect(url) as client:
            print(f"(embedded server at {url})")
            yield client
        return
    async with pulse_trio.connect(url) as client:
        if await _keys(client, namespace):
            sys.exit(f"{url} already holds keys matching *{namespace}:*; delete them first")
        try:
            yield client
        finally:
            leftovers = await _keys(client, namespace)
            for key in leftovers:  # one by one: on a cluster they live in different slots
                await client.execute("DEL", key)
            print(f"(cleaned up {url}: {len(leftovers)} keys of this example removed)")
