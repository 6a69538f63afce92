"""coredis 6.x loses a pool slot per connection that dies while leased; pulse-trio patches it."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from coredis.tokens import PureToken

import pulse_trio

pytestmark = pytest.mark.anyio


async def lose_a_subscription(client: Any, admin: Any) -> None:
    """Subscribe, have the server kill the subscription, and read until that surfaces."""
    async with client.pubsub(channels=["x"], retry_policy=None) as ps:
        await admin.client_kill(type_=PureToken.PUBSUB)
        while True:
            await ps.get_message(timeout=2)


async def test_killed_subscriptions_give_their_pool_slot_back(server_url: str) -> None:
    async with (
        pulse_trio.connect(server_url, max_connections=3) as small,
        pulse_trio.connect(server_url) as admin,
    ):
        for _ in range(10):  # more losses than the pool has slots
            # An exhausted pool would wait forever for a connection here.
            with anyio.fail_after(5), pytest.raises(BaseExceptionGroup):
                await lose_a_subscription(small, admin)
        with anyio.fail_after(5):
            assert await small.ping() == b"PONG"


async def test_cluster_pool_gives_slots_back(cluster_client: Any, cluster_url: str) -> None:
    host_port = cluster_url.split("://", 1)[1]
    async with pulse_trio.connect(f"redis+cluster://{host_port}", max_connections=3) as small:
        for _ in range(8):
            with anyio.fail_after(5), pytest.raises(BaseExceptionGroup):
                await lose_a_subscription(small, cluster_client)  # kills on every node
        with anyio.fail_after(5):
            assert await small.ping() in (b"PONG", True)
