"""Fixtures of the transport tests: a ready :class:`~pulse_trio._redis.Client` per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pulse_trio._redis import Client, open_client


@pytest.fixture
async def rclient(server_url: str) -> AsyncIterator[Client]:
    """A transport client on the session server (tests use unique key names, no flush)."""
    async with open_client(server_url, client_name="transport-tests") as client:
        yield client
