"""The Go peer as a subprocess of a test: its JSON lines, commands and deadlines."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

#: Seconds to wait for any one expected line from the Go peer.
LINE_TIMEOUT = 10.0

Line = dict[str, Any]


class GoProcessError(AssertionError):
    """The Go peer answered a command with an error, died, or did not answer in time."""


class GoProcess:
    """A running Go peer: its parsed stdout lines, its stderr, and commands to it.

    Every line the peer prints is kept in :attr:`lines` (in order); waits scan from the
    start so no line can be missed between two waits.
    """

    def __init__(self, process: anyio.abc.Process, args: list[str]) -> None:
        self.process = process
        self.args = args
        self.lines: list[Line] = []
        self.stderr = bytearray()
        self._changed = anyio.Event()
        self._ids = itertools.count(1)
        self.eof = False

    def __repr__(self) -> str:
        return f"<GoProcess {' '.join(self.args)} pid={self.process.pid}>"

    # ------------------------------------------------------------ reading

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        stream = BufferedByteReceiveStream(self.process.stdout)
        try:
            while True:
                raw = await stream.receive_until(b"\n", 64 * 1024 * 1024)
                self.lines.append(json.loads(raw))
                self._wake()
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
            pass
        finally:
            self.eof = True
            self._wake()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError):
            async for chunk in self.process.stderr:
                self.stderr += chunk

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def diagnostics(self) -> str:
        """The peer's last lines and its stderr, for assertion messages."""
        tail = "\n".join(json.dumps(line) for line in self.lines[-20:])
        err = self.stderr.decode(errors="replace")[-3000:]
        return f"{self!r}\n--- last stdout lines:\n{tail}\n--- stderr:\n{err}"

    def matching(self, pred: Callable[[Line], bool]) -> list[Line]:
        """All lines printed so far for which ``pred`` holds."""
        return [line for line in self.lines if pred(line)]

    def of_type(self, kind: str) -> list[Line]:
        """All lines of the given ``type``."""
        return self.matching(lambda line: line.get("type") == kind)

    async def wait_for(
        self,
        pred: Callable[[list[Line]], bool],
        *,
        within: float = LINE_TIMEOUT,
        what: str = "a condition",
    ) -> None:
        """Wait until ``pred(self.lines)`` holds."""
        with anyio.move_on_after(within):
            while not pred(self.lines):
                if self.eof:
                    raise GoProcessError(f"peer exited waiting for {what}\n{self.diagnostics()}")
                await self._changed.wait()
            return
        raise GoProcessError(f"timed out after {within} s waiting for {what}\n{self.diagnostics()}")

    async def wait_line(
        self,
        pred: Callable[[Line], bool],
        *,
        within: float = LINE_TIMEOUT,
        what: str = "a line",
    ) -> Line:
        """Wait for the first line (printed at any time) for which ``pred`` holds."""
        await self.wait_for(
            lambda lines: any(pred(line) for line in lines), within=within, what=what
        )
        return next(line for line in self.lines if pred(line))

    async def wait_count(
        self, kind: str, count: int, *, within: float = LINE_TIMEOUT
    ) -> list[Line]:
        """Wait until at least ``count`` lines of type ``kind`` were printed; return them."""
        await self.wait_for(
            lambda lines: sum(1 for line in lines if line.get("type") == kind) >= count,
            within=within,
            what=f"{count} {kind!r} lines",
        )
        return self.of_type(kind)

    # ------------------------------------------------------------ commands

    async def call(self, op: str, *, within: float = LINE_TIMEOUT, **fields: Any) -> Line:
        """Send a command and return its successful result line."""
        command_id = next(self._ids)
        assert self.process.stdin is not None
        await self.process.stdin.send(
            json.dumps({"id": command_id, "op": op, **fields}).encode() + b"\n"
        )
        result = await self.wait_line(
            lambda line: line.get("type") == "result" and line.get("id") == command_id,
            within=within,
            what=f"the result of {op} #{command_id}",
        )
        if not result["ok"]:
            raise GoProcessError(f"{op} failed: {result['error']}\n{self.diagnostics()}")
        return result

    # ------------------------------------------------------------ ending

    async def terminate(self, within: float = 5.0) -> int:
        """SIGTERM, then wait for a clean exit; returns the exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(within):
            return await self.process.wait()

    async def kill(self) -> None:
        """SIGKILL (a crash: no cleanup of any kind in the peer) and reap it."""
        if self.process.returncode is None:
            self.process.kill()
        with anyio.fail_after(5):
            await self.process.wait()


@contextlib.asynccontextmanager
async def json_process(command: list[str], *, wait_ready: bool = True) -> AsyncIterator[GoProcess]:
    """Run ``command`` (a program printing JSON lines); yield it once it printed ``ready``.

    On exit it is stopped with SIGTERM (SIGKILL if it does not exit within 5 s).
    """
    process = await anyio.open_process(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    peer = GoProcess(process, command[1:])
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(peer._read_stdout)
            tg.start_soon(peer._read_stderr)
            try:
                if wait_ready:
                    await peer.wait_line(lambda line: line.get("type") == "ready", what="ready")
                yield peer
            finally:
                with anyio.CancelScope(shield=True):
                    if process.returncode is None:
                        process.send_signal(signal.SIGTERM)
                        with anyio.move_on_after(5):
                            await process.wait()
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
    finally:
        with anyio.CancelScope(shield=True):
            await process.aclose()


def go_process(
    binary: Path, addr: str, *args: str, wait_ready: bool = True
) -> contextlib.AbstractAsyncContextManager[GoProcess]:
    """Run the Go peer with ``args`` against Redis at ``addr`` (see :func:`json_process`)."""
    return json_process([str(binary), "--redis", addr, *args], wait_ready=wait_ready)


def b64(data: bytes) -> str:
    """Base64 text of ``data`` (how payloads cross the peer's JSON lines)."""
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    """Bytes of a base64 payload printed by the peer."""
    return base64.b64decode(text)
