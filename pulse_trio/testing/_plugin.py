"""The implementation of :mod:`pulse_trio.testing.plugin` (see its docstring)."""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import anyio.from_thread
import pytest

import pulse_trio

from .._embedded import EmbeddedCluster, EmbeddedServer
from ._proxy import FaultProxy

_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9_.:-]+")


def _flushall(host: str, port: int) -> None:
    """``FLUSHALL`` on one server, over a plain socket (no event loop needed)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"FLUSHALL\r\n")
        reply = sock.recv(64)
    if not reply.startswith(b"+OK"):
        raise RuntimeError(f"FLUSHALL on {host}:{port} answered {reply!r}")


class _Served:
    """A server (or cluster) running in a helper thread's event loop."""

    def __init__(self, server: EmbeddedServer | EmbeddedCluster) -> None:
        self.server = server

    def flush(self) -> None:
        server = self.server
        nodes = server.nodes[: server.masters] if isinstance(server, EmbeddedCluster) else [server]
        for node in nodes:
            _flushall(node.host, node.port)


def _serve(server: EmbeddedServer | EmbeddedCluster) -> Iterator[_Served]:
    with anyio.from_thread.start_blocking_portal("trio") as portal:
        portal.call(server.__aenter__)
        try:
            yield _Served(server)
        finally:
            portal.call(server.__aexit__, None, None, None)


@pytest.fixture(scope="session")
def _pulse_session_server() -> Iterator[_Served]:
    """The server behind ``pulse_server`` (one per session, started on first use)."""
    yield from _serve(EmbeddedServer())


@pytest.fixture(scope="session")
def _pulse_session_cluster() -> Iterator[_Served]:
    """The cluster behind ``pulse_cluster`` (one per session, started on first use)."""
    yield from _serve(EmbeddedCluster(masters=3))


@pytest.fixture
def pulse_server(_pulse_session_server: _Served) -> Iterator[str]:
    """URL (``redis://127.0.0.1:<port>``) of a server shared by the test session.

    Everything the test wrote is removed after it (``FLUSHALL``).
    """
    served = _pulse_session_server
    yield served.server.url if isinstance(served.server, EmbeddedServer) else ""
    served.flush()


@pytest.fixture
def pulse_cluster(_pulse_session_cluster: _Served) -> Iterator[str]:
    """``redis+cluster://`` URL of a 3-master Redis Cluster shared by the test session.

    Everything the test wrote is removed after it (``FLUSHALL`` on every master).
    """
    served = _pulse_session_cluster
    assert isinstance(served.server, EmbeddedCluster)
    yield served.server.url
    served.flush()


@pytest.fixture
def pulse_name(request: pytest.FixtureRequest) -> str:
    """A name for this test's maps, streams, sinks and pools that no other test uses.

    It is valid for every kind of name (1 to 512 characters, no space, NUL or ``*?[]``) and
    starts with the test's name, so that what a failing test left behind is easy to find.
    """
    readable = _NOT_IN_NAMES.sub("-", request.node.name)[:40].strip("-") or "test"
    return f"{readable}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def pulse_client(pulse_server: str, pulse_name: str) -> AsyncIterator[pulse_trio.Client]:
    """A fresh :class:`pulse_trio.Client` on ``pulse_server``, in the test's event loop.

    Its connections are named ``pulse_name`` (``CLIENT SETNAME``), so that
    :func:`~pulse_trio.testing.kill_connections` can find them. Closed after the test.
    """
    async with pulse_trio.connect(pulse_server, client_name=pulse_name) as client:
        yield client


@pytest.fixture
async def pulse_cluster_client(
    pulse_cluster: str, pulse_name: str
) -> AsyncIterator[pulse_trio.Client]:
    """A fresh :class:`pulse_trio.Client` on ``pulse_cluster``, in the test's event loop."""
    async with pulse_trio.connect(pulse_cluster, client_name=pulse_name) as client:
        yield client


@pytest.fixture
async def pulse_killable_server() -> AsyncIterator[EmbeddedServer]:
    """A server of this test's own, with an append-only file (data survives a kill).

    The test may :meth:`~pulse_trio.testing.EmbeddedServer.kill`,
    :meth:`~pulse_trio.testing.EmbeddedServer.restart`,
    :meth:`~pulse_trio.testing.EmbeddedServer.pause` and
    :meth:`~pulse_trio.testing.EmbeddedServer.resume` it. Stopped, and its directory
    removed, after the test.
    """
    async with EmbeddedServer(appendonly=True) as server:
        yield server


@pytest.fixture
async def pulse_proxy(pulse_server: str) -> AsyncIterator[FaultProxy]:
    """A :class:`~pulse_trio.testing.FaultProxy` in front of ``pulse_server``.

    Connect through it with ``pulse_trio.connect(pulse_proxy.url)``; closed (with every
    connection through it) after the test.
    """
    async with FaultProxy(pulse_server) as proxy:
        yield proxy
