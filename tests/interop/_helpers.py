"""Waiting helpers of the interop tests (polling with deadlines, collecting events)."""

from __future__ import annotations

from typing import Any

import anyio

from .._util import collecting as collecting
from .._util import consuming as consuming
from .._util import wait_count as wait_count
from .._util import wait_until as wait_until
from ._peer import GoProcessError, b64


async def consumer_names(client: Any, stream: str, group: str) -> set[str]:
    """The consumers of ``group`` on ``pulse:stream:<stream>`` (XINFO CONSUMERS)."""
    raw = await client.xinfo_consumers(f"pulse:stream:{stream}", group)
    names = set()
    for item in raw:
        fields = {k.decode() if isinstance(k, bytes) else k: v for k, v in item.items()}
        name = fields["name"]
        names.add(name.decode() if isinstance(name, bytes) else name)
    return names


def go_pool_namespaces(pool: str) -> tuple[str, ...]:
    """Prefixes of the Redis keys a goa.design/pulse v1.6.5 pool named ``pool`` writes.

    Its replicated maps are ``<pool>:<what>`` (``map:<pool>:...``), its streams
    ``<pool>:pool`` and ``<pool>:node:<id>`` (with their sink maps ``map:stream:<pool>:...``)
    and ``worker:<id>``; its pool sink is named ``events`` whatever the pool, so the sink's
    keep-alive map and lease are shared by every Go pool (``map:sink:events:...``,
    ``sink:events:...``).
    """
    return (
        f"map:{pool}:",
        f"pulse:stream:{pool}:",
        f"map:stream:{pool}:",
        "pulse:stream:worker:",
        "map:stream:worker:",
        "map:sink:events:",
        "sink:events:",
    )


async def all_keys(client: Any) -> set[str]:
    """Every key of the server's current database (SCAN)."""
    keys = set()
    async for key in client.scan_iter(match="*"):
        keys.add(key.decode() if isinstance(key, bytes) else key)
    return keys


async def go_job_keys(go_node: Any, expected: list[str], within: float = 10.0) -> None:
    """Poll the Go pool node's JobKeys until they are ``expected`` (sorted).

    The Go node reads them from its replica of the pool's jobs map, which follows the
    workers' writes asynchronously.
    """
    keys: list[str] = []
    with anyio.move_on_after(within):
        while (keys := (await go_node.call("job-keys"))["keys"]) != expected:
            await anyio.sleep(0.02)
        return
    raise AssertionError(f"Go job keys {keys}, expected {expected}")


async def go_dispatch(go_node: Any, key: str, payload: bytes) -> None:
    """Dispatch on the Go node; tolerate goa.design/pulse's own dispatch race.

    v1.6.5's ``DispatchJob`` can miss its worker's acknowledgement (it arrives before the
    dispatcher registered its wait: reference/upstream-pool.md section 12, "dispatch return
    for unknown event") and then reports a timeout for a job that did start. That defect is
    Go's, not what this suite tests: accept the timeout when the Go worker started the job.
    """
    try:
        await go_node.call("dispatch", key=key, payload=b64(payload))
    except GoProcessError as exc:
        if "timed out" not in str(exc):
            raise
        await go_node.wait_line(
            lambda line: line.get("type") == "job-start" and line.get("key") == key
        )
