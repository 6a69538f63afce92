"""Fixtures for the Go interoperability suite.

The Go peer (``interop/go``, the ``pulse-interop`` program) is a thin driver of the real
goa.design/pulse library (v1.6.5). It is built once per session: its sources are copied to
a temporary directory, where, when the library's source is at hand (``PULSE_GO_SOURCE``, or
``../shared/vendor/goa-pulse-v1.6.5`` beside the repository), a ``replace`` directive points
``goa.design/pulse`` at it; otherwise the module comes from the Go module proxy. When ``go``
is not on PATH every test of this directory is skipped, with that reason in pytest's ``-ra``
summary.

The peer is driven over stdin/stdout with JSON lines (see ``interop/go/main.go`` and
``_peer.py``).
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

REPO = Path(__file__).resolve().parents[2]
GO_DIR = REPO / "interop" / "go"
#: The goa.design/pulse release the peer is built against (``interop/go/go.mod``).
PULSE_VERSION = "v1.6.5"
#: A cold build (empty module and build caches: downloads, then compiles the standard
#: library, go-redis and the library) takes about a minute on two cores.
BUILD_TIMEOUT = 600.0


def pulse_source() -> Path | None:
    """The directory holding goa.design/pulse's source to build against, if any.

    ``PULSE_GO_SOURCE`` when set, else ``<repo>/../shared/vendor/goa-pulse-v1.6.5`` when it
    exists; ``None`` means "fetch the module through the Go module proxy".
    """
    explicit = os.environ.get("PULSE_GO_SOURCE")
    if explicit:
        path = Path(explicit).resolve()
        if not (path / "go.mod").is_file():
            pytest.fail(f"PULSE_GO_SOURCE={explicit} holds no go.mod")
        return path
    vendored = REPO.parent / "shared" / "vendor" / f"goa-pulse-{PULSE_VERSION}"
    return vendored if (vendored / "go.mod").is_file() else None


def build_peer(go: str, workdir: Path) -> Path:
    """Copy the peer's sources to ``workdir``, point it at the library, build it."""
    src = workdir / "src"
    shutil.copytree(GO_DIR, src, ignore=shutil.ignore_patterns("pulse-interop"))
    binary = workdir / "pulse-interop"
    source = pulse_source()
    steps = []
    if source is not None:
        steps.append([go, "mod", "edit", f"-replace=goa.design/pulse={source}"])
    # -mod=mod: without a replace, go.sum gains the module's own checksum from the proxy.
    steps.append([go, "build", "-mod=mod", "-buildvcs=false", "-o", str(binary), "."])
    for step in steps:
        try:
            done = subprocess.run(
                step,
                cwd=src,
                env=dict(os.environ),
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{' '.join(step)}` took more than {BUILD_TIMEOUT:.0f} s")
        if done.returncode != 0:
            where = f"against {source}" if source else "from the Go module proxy"
            hint = (
                ""
                if source
                else "\n(set PULSE_GO_SOURCE to a copy of goa.design/pulse v1.6.5's source if "
                "the proxy refuses the module)"
            )
            pytest.fail(
                f"building the Go peer {where} failed: `{' '.join(step)}`:\n"
                f"{done.stdout}{done.stderr}{hint}"
            )
    return binary


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
        yield build_peer(go, Path(tmp))


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
