"""Fixtures for the Go interoperability suite.

The Go peer (``interop/go``, the ``pulse-interop`` program) is built once per session with
``go build`` into a temporary directory. When ``go`` is not on PATH every test of this
directory is skipped, with that reason in pytest's ``-ra`` summary.

The peer speaks goa.design/pulse v1.6.5's wire protocol through go-redis; it is driven over
stdin/stdout with JSON lines (see ``interop/go/main.go`` and ``_peer.py``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ._peer import GoProcess, go_process

GO_DIR = Path(__file__).resolve().parents[2] / "interop" / "go"
#: A cold build (empty module and build caches: downloads, then compiles the standard
#: library and go-redis) takes about a minute on two cores.
BUILD_TIMEOUT = 600.0


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: mark the first test that runs
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give the first interop test, which builds the Go peer, time for a cold build."""
    for item in items:
        if "go_binary" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT + 120))
            break


@pytest.fixture(scope="session")
def go_binary() -> Iterator[Path]:
    """The Go peer, built once for the session (skips the suite when Go is missing)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go toolchain not found: `go` is not on PATH (interop tests need Go >= 1.24)")
    with tempfile.TemporaryDirectory(prefix="pulse-interop-") as tmp:
        binary = Path(tmp) / "pulse-interop"
        try:
            built = subprocess.run(
                [go, "build", "-mod=mod", "-buildvcs=false", "-o", str(binary), "."],
                cwd=GO_DIR,
                env=dict(os.environ),
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"`go build` of {GO_DIR} took more than {BUILD_TIMEOUT:.0f} s")
        if built.returncode != 0:
            pytest.fail(f"`go build` of {GO_DIR} failed:\n{built.stdout}{built.stderr}")
        yield binary


@pytest.fixture
def redis_addr(server_url: str) -> str:
    """``host:port`` of the session server, as the Go peer takes it."""
    parts = urlsplit(server_url)
    return f"{parts.hostname}:{parts.port}"


@pytest.fixture
def go(
    go_binary: Path, redis_addr: str
) -> Callable[..., contextlib.AbstractAsyncContextManager[GoProcess]]:
    """``async with go("map-join", name) as peer:`` runs the Go peer on the session server."""

    def start(
        *args: str, wait_ready: bool = True
    ) -> contextlib.AbstractAsyncContextManager[GoProcess]:
        return go_process(go_binary, redis_addr, *args, wait_ready=wait_ready)

    return start
