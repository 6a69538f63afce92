"""The systems a scenario compares, and why one cannot run here.

A system is pulse-trio itself, a peer that does the same job (``go-pulse``: the real
goa.design/pulse v1.6.5 through ``benchmarks/go``; the Python job queues ``streaq``,
``taskiq``, ``saq``, ``arq``) or a floor (``coredis-raw``, ``redis-py-raw``,
``redis-benchmark``, ``dict``). Peers are optional: :func:`unavailable` says why one cannot
run (package not installed, Go absent, build failed) and the runner skips it with that reason.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

#: Every system name the JSON may hold, in the order of the results table.
SYSTEMS = (
    "pulse-trio",
    "go-pulse",
    "streaq",
    "taskiq",
    "saq",
    "arq",
    "coredis-raw",
    "redis-py-raw",
    "redis-benchmark",
    "dict",
)
#: The Python job queues (``pip install -e '.[bench]'``).
QUEUES = ("streaq", "taskiq", "saq", "arq")
#: Python modules each system imports.
MODULES: dict[str, tuple[str, ...]] = {
    "streaq": ("streaq",),
    "taskiq": ("taskiq", "taskiq_redis"),
    "saq": ("saq",),
    "arq": ("arq",),
    "coredis-raw": ("coredis",),
    "redis-py-raw": ("redis",),
}
#: goa.design/pulse release the Go program is built against (``benchmarks/go/go.mod``).
GO_PULSE_VERSION = "v1.6.5"
GO_DIR = Path(__file__).parent / "go"
REPO = Path(__file__).resolve().parents[1]
#: A cold Go build (empty caches) takes about a minute on two cores.
GO_BUILD_TIMEOUT = 600.0


class Systems:
    """Which systems can run in this process, decided once and remembered with reasons.

    Args:
        without: Systems to treat as not installed (``--without``; the tests use it to
            check that an absent peer is skipped, not a crash).
    """

    def __init__(self, without: frozenset[str] = frozenset()) -> None:
        self._without = without
        self._reasons: dict[str, str | None] = {}
        self._go_binary: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def unavailable(self, system: str) -> str | None:
        """Why ``system`` cannot run here, or ``None`` when it can."""
        if system not in self._reasons:
            self._reasons[system] = self._check(system)
        return self._reasons[system]

    @property
    def go_binary(self) -> Path:
        """The built ``pulse-bench`` program (only after ``unavailable("go-pulse")`` is None)."""
        assert self._go_binary is not None, "go-pulse is not available"
        return self._go_binary

    def close(self) -> None:
        """Remove the Go build directory."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _check(self, system: str) -> str | None:
        if system in self._without:
            return f"{system} disabled by --without"
        if system in ("pulse-trio", "dict"):
            return None
        if system == "redis-benchmark":
            found = shutil.which("redis-benchmark")
            return None if found else "redis-benchmark not on PATH (it ships with redis-server)"
        if system == "go-pulse":
            return self._build_go()
        missing = [m for m in MODULES[system] if importlib.util.find_spec(m) is None]
        if missing:
            extra = "bench" if system in QUEUES else "dev"
            return (
                f"{', '.join(missing)} not installed (pip install -e '.[{extra}]')"
                if system in QUEUES or system.endswith("-raw")
                else f"{', '.join(missing)} not installed"
            )
        return None

    def _build_go(self) -> str | None:
        go = shutil.which("go") or next(
            (str(p) for p in (Path("/usr/local/go/bin/go"),) if p.is_file()), None
        )
        if go is None:
            return "Go toolchain not found (`go` not on PATH): go-pulse needs Go >= 1.24"
        self._tmp = tempfile.TemporaryDirectory(prefix="pulse-bench-go-")
        src = Path(self._tmp.name) / "src"
        shutil.copytree(GO_DIR, src)
        binary = Path(self._tmp.name) / "pulse-bench"
        steps = []
        source = go_pulse_source()
        if source is not None:
            steps.append([go, "mod", "edit", f"-replace=goa.design/pulse={source}"])
        steps.append([go, "build", "-mod=mod", "-buildvcs=false", "-o", str(binary), "."])
        for step in steps:
            try:
                done = subprocess.run(
                    step,
                    cwd=src,
                    capture_output=True,
                    text=True,
                    timeout=GO_BUILD_TIMEOUT,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"building benchmarks/go failed: {exc}"
            if done.returncode != 0:
                where = f"against {source}" if source else "from the Go module proxy"
                last = (done.stderr or done.stdout).strip().splitlines()[-1:]
                return f"building benchmarks/go {where} failed: {' '.join(last)}"
        self._go_binary = binary
        return None


def go_pulse_source() -> Path | None:
    """The goa.design/pulse source to build against, or ``None`` for the module proxy.

    ``PULSE_GO_SOURCE`` when set, else ``shared/vendor/goa-pulse-v1.6.5`` beside the clone
    (CI) or beside the worktree's parent (development worktrees), when it exists.
    """
    explicit = os.environ.get("PULSE_GO_SOURCE")
    if explicit:
        return Path(explicit).resolve()
    for base in (REPO.parent, REPO.parent.parent):
        vendored = base / "shared" / "vendor" / f"goa-pulse-{GO_PULSE_VERSION}"
        if (vendored / "go.mod").is_file():
            return vendored
    return None
