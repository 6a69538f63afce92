"""Shared fixtures: real servers, entered clients, both AnyIO backends.

A session-scoped server is started once (``redis-server`` on PATH, else the embedded
Valkey); each test gets a freshly flushed client. Tests that restart or kill a server use
the function-scoped ``own_server`` fixture instead.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

import pulse_trio
from pulse_trio.testing import EmbeddedCluster, EmbeddedServer

from ._admin import AdminClient

BACKENDS = [
    pytest.param("trio", id="trio"),
    pytest.param(("asyncio", {"debug": True}), id="asyncio"),
]


@pytest.fixture(params=BACKENDS, scope="session")
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Every async test runs on Trio and on asyncio."""
    return request.param


def _serve_for_session(
    server: EmbeddedServer | EmbeddedCluster,
) -> Iterator[str]:
    """Run ``server`` in a helper thread's event loop for as long as the generator lives."""
    with anyio.from_thread.start_blocking_portal("trio") as portal:
        portal.call(server.__aenter__)
        try:
            yield server.url
        finally:
            portal.call(server.__aexit__, None, None, None)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of one server shared by the whole session (started in a helper thread's loop)."""
    yield from _serve_for_session(EmbeddedServer())


@pytest.fixture
async def client(server_url: str) -> AsyncIterator[AdminClient]:
    """An open client on the shared server, after FLUSHALL (with the tests' helpers)."""
    async with pulse_trio.connect(server_url) as c:
        admin = AdminClient.of(c)
        await admin.flushall()
        yield admin


@pytest.fixture
async def own_server() -> AsyncIterator[EmbeddedServer]:
    """A server of this test's own (AOF on), which the test may restart or kill."""
    async with EmbeddedServer(appendonly=True) as server:
        yield server


@pytest.fixture
def unique() -> str:
    """A short unique name prefix for this test."""
    return "t" + uuid.uuid4().hex[:10]


# --- Redis Cluster -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    """``redis+cluster://`` URL of one 3-master cluster shared by the session (helper thread)."""
    yield from _serve_for_session(EmbeddedCluster(masters=3))


@pytest.fixture
async def cluster_client(cluster_url: str) -> AsyncIterator[AdminClient]:
    """An open client on the shared cluster, after FLUSHALL on every master."""
    async with pulse_trio.connect(cluster_url) as c:
        assert c.is_cluster
        admin = AdminClient.of(c)
        await admin.flushall()
        yield admin


@pytest.fixture(autouse=True, scope="session")
def _freeze_what_exists_before_the_first_test() -> Iterator[None]:
    """Keep what exists before the first test (modules, collected tests) out of every collection.

    A full collection scans every tracked object: with the session's imports, tens of ms per test
    spent on objects that never become garbage. Frozen, they are skipped; what the tests make
    is still collected after each test. Hypothesis is imported first: its plugins register
    random generators that it checks with ``gc.get_referrers``, which ignores frozen objects.
    """
    import hypothesis  # noqa: F401

    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    """Collect garbage after each test so resource warnings name the test that leaked."""
    yield
    gc.collect()
