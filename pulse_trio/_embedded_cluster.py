"""A throwaway local Redis Cluster: :class:`EmbeddedCluster` (masters and replicas, each an
:class:`~._embedded_server.EmbeddedServer`), formed and checked converged before use.
"""

from __future__ import annotations

import contextlib
import functools
import math
import socket
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from ._embedded_server import (
    PORT_ATTEMPTS,
    EmbeddedServer,
    EmbeddedServerError,
    find_server_binary,
)
from ._redis import Client, open_client

#: Number of hash slots of a Redis Cluster.
CLUSTER_SLOTS = 16384
#: ``cluster-node-timeout`` of embedded clusters, in seconds (short: failover tests stay fast).
CLUSTER_NODE_TIMEOUT = 2.0
#: How long an embedded cluster may take to converge (slots, meets, replicas), in seconds.
CLUSTER_START_TIMEOUT = 30.0


class EmbeddedCluster:
    """A local Redis Cluster of :class:`EmbeddedServer` nodes.

    ``masters * (1 + replicas)`` nodes are started, each in its own temporary directory on free
    loopback ports (client port and cluster bus port). The hash slots are split evenly among
    the masters, the nodes meet each other, every master gets ``replicas`` replicas, and the
    block starts only once every node reports ``cluster_state:ok``, knows every other node,
    and every replica's link to its master is up. Only server commands are used (no
    ``redis-cli``), so the bundled ``valkey-server`` alone is enough::

        async with EmbeddedCluster(masters=3, replicas=1) as cluster:
            async with pulse_trio.connect(cluster.url) as client:   # client.is_cluster
                ...

    Args:
        masters: Number of master nodes (at least 1).
        replicas: Replicas per master (at least 0).
        node_timeout: ``cluster-node-timeout`` in seconds; default
            :data:`CLUSTER_NODE_TIMEOUT`.
        extra_args: More ``--option value`` arguments for every node.
        binary: The server binary; :func:`find_server_binary` when ``None``.
        start_timeout: How long the cluster may take to converge, in seconds; default
            :data:`CLUSTER_START_TIMEOUT`.

    Raises:
        ValueError: ``masters`` < 1, ``replicas`` < 0, or a non-positive timeout.

    Cancellation:
        Leaving the block, also by cancellation (or a failed start), stops every node under a
        shielded scope and removes their directories.
    """

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 0,
        *,
        node_timeout: float = CLUSTER_NODE_TIMEOUT,
        extra_args: Sequence[str] = (),
        binary: str | None = None,
        start_timeout: float = CLUSTER_START_TIMEOUT,
    ) -> None:
        if masters < 1 or masters > CLUSTER_SLOTS:
            raise ValueError(f"masters={masters!r}: a cluster needs 1 to {CLUSTER_SLOTS} masters")
        if replicas < 0:
            raise ValueError(f"replicas={replicas!r}: the number of replicas cannot be negative")
        if not node_timeout > 0 or not math.isfinite(node_timeout):
            raise ValueError(f"node_timeout={node_timeout!r}: must be a positive number of seconds")
        if not start_timeout > 0:
            raise ValueError(f"start_timeout={start_timeout!r}: must be a positive number")
        self.masters = masters
        self.replicas = replicas
        self.node_timeout = node_timeout
        self.extra_args = tuple(extra_args)
        self.binary = binary or find_server_binary()
        self.start_timeout = start_timeout
        self._nodes: list[EmbeddedServer | None] = [None] * (masters * (1 + replicas))
        self._node_ids: list[str] = []
        self._waiting_for = ""

    @property
    def nodes(self) -> list[EmbeddedServer]:
        """The started nodes: the masters first, then the replicas (master by master)."""
        return [node for node in self._nodes if node is not None]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:<port of the first node>`` (a seed for the client)."""
        if self._nodes[0] is None:
            raise EmbeddedServerError("the cluster is not running: enter it with `async with`")
        return f"redis+cluster://{self._nodes[0].host}:{self._nodes[0].port}"

    async def __aenter__(self) -> EmbeddedCluster:
        try:
            await self._start()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _start_node(self, index: int) -> None:
        """Start node ``index`` on two free ports (client + bus), retrying on a port clash."""
        last_error: EmbeddedServerError | None = None
        for _ in range(PORT_ATTEMPTS):
            port, bus_port = _free_ports(2)
            server = EmbeddedServer(
                port=port,
                binary=self.binary,
                extra_args=[
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(max(1, round(self.node_timeout * 1000))),
                    "--cluster-port", str(bus_port),
                    # Replicas sync at once, and their offsets advance (by the master's pings)
                    # soon enough that CLUSTER SLOTS lists them within a second.
                    "--repl-diskless-sync-delay", "0",
                    "--repl-ping-replica-period", "1",
                    *self.extra_args,
                ],
            )  # fmt: skip
            # Registered before it starts: if the start is cancelled, _close() stops it.
            self._nodes[index] = server
            try:
                await server.__aenter__()
            except EmbeddedServerError as error:
                self._nodes[index] = None
                last_error = error
                continue
            return
        assert last_error is not None
        raise last_error

    async def _start(self) -> None:
        async with anyio.create_task_group() as tg:
            for index in range(len(self._nodes)):
                tg.start_soon(self._start_node, index)
        nodes = self.nodes
        self._waiting_for = "the first node's answers"
        with anyio.move_on_after(self.start_timeout) as scope:
            async with contextlib.AsyncExitStack() as stack:
                clients: list[Client] = []
                for node in nodes:
                    # One plain (not cluster-aware) client per node: these commands are about
                    # the node itself, not about keys.
                    clients.append(await stack.enter_async_context(open_client(node.url)))
                await self._form(nodes, clients)
        if scope.cancelled_caught:
            raise EmbeddedServerError(
                f"the cluster did not converge within {self.start_timeout} s; still waiting "
                f"for {self._waiting_for}"
            )

    async def _form(self, nodes: list[EmbeddedServer], clients: list[Client]) -> None:
        """Assign slots, meet, replicate, and wait until every node agrees."""
        self._node_ids = [_text(await client.execute("CLUSTER", "MYID")) for client in clients]
        for index, client in enumerate(clients):
            # Distinct config epochs up front, as redis-cli does: no epoch-collision rounds.
            await client.execute("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
        for index in range(self.masters):
            first = index * CLUSTER_SLOTS // self.masters
            last = (index + 1) * CLUSTER_SLOTS // self.masters - 1
            await clients[index].execute("CLUSTER", "ADDSLOTSRANGE", first, last)
        bus_ports = [_bus_port(node) for node in nodes]
        for node, bus_port in zip(nodes[1:], bus_ports[1:], strict=True):
            await clients[0].execute("CLUSTER", "MEET", node.host, node.port, bus_port)
        for index in range(self.masters, len(nodes)):
            master_id = self._node_ids[(index - self.masters) // self.replicas]
            # A node can replicate only a master it already knows (gossip after the meets).
            await _poll(functools.partial(_knows, clients[index], master_id))
            await clients[index].execute("CLUSTER", "REPLICATE", master_id)
        await _poll(lambda: self._converged(clients))

    async def _converged(self, clients: list[Client]) -> bool:
        """Whether every node agrees the cluster is complete; else note what is missing."""
        total = len(clients)
        for index, (client, node) in enumerate(zip(clients, self.nodes, strict=True)):
            self._waiting_for = f"node {node.port}: "
            info = _fields(await client.execute("CLUSTER", "INFO"))
            if (
                info.get("cluster_state") != "ok"
                or int(info.get("cluster_known_nodes", 0)) != total
                or int(info.get("cluster_slots_ok", 0)) != CLUSTER_SLOTS
            ):
                self._waiting_for += (
                    f"cluster_state={info.get('cluster_state')}, "
                    f"known_nodes={info.get('cluster_known_nodes')}/{total}, "
                    f"slots_ok={info.get('cluster_slots_ok')}/{CLUSTER_SLOTS}"
                )
                return False
            replicas = 0
            for entry in await _cluster_nodes(client):
                flags = set(entry["flags"])
                if flags & {"handshake", "fail", "fail?", "noaddr"} or (
                    "myself" not in flags and entry["link_state"] != "connected"
                ):
                    self._waiting_for += (
                        f"sees {entry['port']} as {sorted(flags)}, link {entry['link_state']}"
                    )
                    return False
                if "slave" in flags or "replica" in flags:
                    replicas += 1
            if replicas != total - self.masters:
                self._waiting_for += f"knows {replicas}/{total - self.masters} replicas"
                return False
            # Replicas appear in CLUSTER SLOTS (what cluster clients read) only once their
            # replication offset is known to be non-zero: wait for that too. Each entry is
            # [first slot, last slot, master, *replicas]; each master here has one range.
            slots = await client.execute("CLUSTER", "SLOTS")
            if len(slots) != self.masters or any(
                len(entry) - 2 != 1 + self.replicas for entry in slots
            ):
                self._waiting_for += "CLUSTER SLOTS does not list every master and replica yet"
                return False
            if index >= self.masters:
                replication = _fields(await client.execute("INFO", "replication"))
                if replication.get("master_link_status") != "up":
                    self._waiting_for += "replica's link to its master is not up"
                    return False
        self._waiting_for = ""
        return True

    async def _close(self) -> None:
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for node in self.nodes:
                    tg.start_soon(node.__aexit__, None, None, None)

    def __repr__(self) -> str:
        running = sum(node.running for node in self.nodes)
        seed = self.url if self._nodes[0] is not None else "(not started)"
        return (
            f"<EmbeddedCluster {seed} masters={self.masters} replicas={self.replicas} "
            f"running={running}/{len(self._nodes)}>"
        )


def _free_ports(count: int) -> list[int]:
    """Return ``count`` distinct loopback ports that were free a moment ago."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


async def _poll(condition: Callable[[], Awaitable[bool]], interval: float = 0.05) -> None:
    """Wait until ``condition()`` is true (the caller bounds the wait with a deadline)."""
    while True:
        if await condition():
            return
        await anyio.sleep(interval)


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _fields(reply: Any) -> dict[str, str]:
    """``name:value`` lines (``CLUSTER INFO``, ``INFO``) as a dict (comments skipped)."""
    lines = _text(reply).splitlines()
    return dict(line.partition(":")[::2] for line in lines if ":" in line and line[0] != "#")


async def _cluster_nodes(client: Client) -> list[dict[str, Any]]:
    """``CLUSTER NODES``: per node its ``id``, ``port``, ``flags`` and ``link_state``."""
    nodes: list[dict[str, Any]] = []
    for line in _text(await client.execute("CLUSTER", "NODES")).splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split("@")[0]
        nodes.append(
            {
                "id": parts[0],
                "port": int(address.rpartition(":")[2] or 0),
                "flags": tuple(parts[2].split(",")),
                "link_state": parts[7],
            }
        )
    return nodes


async def _knows(client: Client, node_id: str) -> bool:
    return any(entry["id"] == node_id for entry in await _cluster_nodes(client))


def _bus_port(node: EmbeddedServer) -> int:
    args = node.extra_args
    return int(args[args.index("--cluster-port") + 1])
