"""Finding the primary of a Sentinel-managed service, and following it after a failover.

The client's node for the service resolves its address on every (re)connection by asking the
sentinels ``SENTINEL GET-MASTER-ADDR-BY-NAME <service>``, one after the other, starting with
the one that answered last. A failover is followed three ways: :func:`watch_failovers`
subscribes to Sentinel's ``+switch-master`` and drops the connections to the old primary as
soon as it is announced; the old primary's connections are closed by Sentinel when it
reconfigures it (``CLIENT KILL``); and a ``READONLY`` answer makes the client drop its
connection (see ``Standalone``). The next request then resolves the primary again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
import attrs

from .._errors import RedisUnavailableError
from ._direct import DirectConnection
from ._node import Node
from ._pubsub import Subscription
from ._resp import Message, ResponseError
from ._settings import Address, Backoff, ConnectionSettings
from ._url import ParsedURL

logger = logging.getLogger("pulse_trio.redis")


def _sentinel_settings(parsed: ParsedURL, settings: ConnectionSettings) -> ConnectionSettings:
    return attrs.evolve(
        settings,
        username=parsed.options.get("sentinel_username"),
        password=parsed.options.get("sentinel_password"),
        db=0,
    )


def sentinel_resolver(
    parsed: ParsedURL, settings: ConnectionSettings
) -> Callable[[], Awaitable[Address]]:
    """Return an async function giving the current primary's address of ``parsed.service``.

    The sentinels are ``parsed.addresses``; they are reached with the data servers' TLS
    settings, no database, and ``?sentinel_username=`` / ``?sentinel_password=`` from the URL
    (none by default).

    Raises (from the returned function):
        RedisUnavailableError: No sentinel answered with an address for the service.
    """
    sentinel_settings = _sentinel_settings(parsed, settings)
    sentinels = list(parsed.addresses)
    service = parsed.service or ""

    async def resolve() -> Address:
        problems: list[str] = []
        for sentinel in list(sentinels):
            try:
                conn = await DirectConnection.open(sentinel, sentinel_settings)
                try:
                    reply = await conn.execute("SENTINEL", "GET-MASTER-ADDR-BY-NAME", service)
                finally:
                    await conn.aclose()
            except (RedisUnavailableError, ResponseError) as exc:
                problems.append(f"{sentinel}: {exc}")
                continue
            if not reply:
                problems.append(f"{sentinel}: does not know the service {service!r}")
                continue
            # Ask this one first next time.
            sentinels.remove(sentinel)
            sentinels.insert(0, sentinel)
            host, port = reply
            return Address(host.decode(), int(port))
        raise RedisUnavailableError(
            f"no Sentinel gave the primary of {service!r}: " + "; ".join(problems)
        )

    return resolve


async def watch_failovers(node: Node, parsed: ParsedURL, settings: ConnectionSettings) -> None:
    """Follow Sentinel's ``+switch-master`` announcements for ``parsed.service``.

    Runs in the client's task group for as long as the client is open. When a sentinel
    announces a new primary (or after this watcher's own subscription reconnected, when an
    announcement may have been missed, and the primary moved), ``node``'s connections are
    dropped so that the next request resolves the primary again. Without it, a client would
    keep writing to a demoted primary that still believes it is one until Sentinel
    reconfigures it (up to ~10 s after a forced failover), and those writes would be lost.

    Cancellation:
        Returns only by cancellation (the client's exit). Sentinel outages are retried with
        jittered backoff and logged.
    """
    sentinel_settings = _sentinel_settings(parsed, settings)
    service = (parsed.service or "").encode()
    sentinels = list(parsed.addresses)
    resolve = sentinel_resolver(parsed, settings)

    async def open_sentinel() -> DirectConnection:
        problems = []
        for sentinel in sentinels:
            try:
                return await DirectConnection.open(sentinel, sentinel_settings)
            except (RedisUnavailableError, ResponseError) as exc:
                problems.append(f"{sentinel}: {exc}")
        raise RedisUnavailableError("no sentinel reachable: " + "; ".join(problems))

    backoff = Backoff()
    while True:
        try:
            async with Subscription(
                open_sentinel, sentinel_settings, ("+switch-master",), ()
            ) as subscription:
                backoff.reset()
                async for item in subscription:
                    if isinstance(item, Message):
                        fields = item.data.split()
                        if fields and fields[0] == service:
                            logger.info("Sentinel: %s", item.data.decode(errors="replace"))
                            node.reset("Sentinel announced a new primary")
                    elif node.address_in_use() != await resolve():
                        node.reset("the primary changed while Sentinel was unreachable")
        except (RedisUnavailableError, ResponseError) as exc:
            delay = backoff.next_delay()
            logger.warning("Sentinel watcher: %s; retrying in %.2f s", exc, delay)
            await anyio.sleep(delay)
