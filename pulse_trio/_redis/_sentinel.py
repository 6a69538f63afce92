"""Finding the primary of a Sentinel-managed service, and following it after a failover.

The client's node for the service resolves its address on every (re)connection by asking the
sentinels ``SENTINEL GET-MASTER-ADDR-BY-NAME <service>``, one after the other, starting with
the one that answered last. A failover is followed because the old primary's connections are
closed by Sentinel (``CLIENT KILL`` during the reconfiguration) or answer writes with
``READONLY``, after which the client drops its connection (see ``Standalone``) and the next
request resolves again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs

from .._errors import RedisUnavailableError
from ._connection import Address, ConnectionSettings, DirectConnection
from ._resp import ResponseError

if TYPE_CHECKING:
    from ._client import ParsedURL


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
    sentinel_settings = attrs.evolve(
        settings,
        username=parsed.options.get("sentinel_username"),
        password=parsed.options.get("sentinel_password"),
        db=0,
    )
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
