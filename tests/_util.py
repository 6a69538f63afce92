"""Small helpers shared by the tests: polling with deadlines instead of sleeps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio


async def wait_until(
    predicate: Callable[[], bool], *, timeout: float = 5.0, interval: float = 0.005, what: str = ""
) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    with anyio.move_on_after(timeout):
        while not predicate():
            await anyio.sleep(interval)
        return
    raise AssertionError(f"condition not met within {timeout}s: {what or predicate}")


async def wait_until_async(
    predicate: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 5.0,
    interval: float = 0.005,
    what: str = "",
) -> None:
    """Like :func:`wait_until` for a predicate that needs I/O."""
    with anyio.move_on_after(timeout):
        while not await predicate():
            await anyio.sleep(interval)
        return
    raise AssertionError(f"condition not met within {timeout}s: {what or predicate}")
