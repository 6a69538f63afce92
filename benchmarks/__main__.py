"""Benchmark runner: ``python -m benchmarks [--redis-url URL] [--scenario NAME] [--backend B]``.

Starts its own embedded server unless ``--redis-url`` is given, runs every selected scenario
on every selected backend (Trio and asyncio by default, one after the other in this process),
prints a results table and writes the rows as JSON to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import anyio.from_thread
import attrs

import pulse_trio
import pulse_trio.testing

from . import client, pool, rmap, streaming
from ._common import Client, Result

#: Where the JSON results go (gitignored).
RESULTS_DIR = Path(__file__).parent / "results"
#: Backends run by default, in this order.
BACKENDS = ("trio", "asyncio")
#: Scenario modules by name; each has NAME, CONSTANTS and ``async run(client, backend)``, or
#: ``async run_url(url, backend)`` when it opens its own clients (``client``: one server only).
SCENARIOS: dict[str, ModuleType] = {
    "client": client,
    "pool": pool,
    "rmap": rmap,
    "streaming": streaming,
}

ScenarioRun = Callable[[Client, str], Awaitable[list[Result]]]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("PULSE_REDIS_URL"),
        help="server to use (default: $PULSE_REDIS_URL, else a throwaway embedded server); "
        "benchmarks only touch keys named bench-*, and delete them",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable; default: all)",
    )
    parser.add_argument(
        "--backend",
        action="append",
        choices=BACKENDS,
        help="run only on this backend (repeatable; default: trio and asyncio)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="without --redis-url: start a 3-master embedded Redis Cluster instead of one server",
    )
    parser.add_argument(
        "--no-json", action="store_true", help="do not write benchmarks/results/*.json"
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def _server(url: str | None, cluster: bool) -> Iterator[tuple[str, str]]:
    """Yield (url, description): the given server, or an embedded one run by a helper thread."""
    if url:
        yield url, "given by --redis-url"
        return
    with anyio.from_thread.start_blocking_portal("trio") as portal:
        if cluster:
            embedded_cluster = pulse_trio.testing.EmbeddedCluster()
            portal.call(embedded_cluster.__aenter__)
            try:
                yield embedded_cluster.url, f"embedded-cluster {embedded_cluster.binary}"
            finally:
                portal.call(embedded_cluster.__aexit__, None, None, None)
            return
        server = pulse_trio.testing.EmbeddedServer()
        portal.call(server.__aenter__)
        try:
            yield server.url, f"embedded {server.binary}"
        finally:
            portal.call(server.__aexit__, None, None, None)


def _as_text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


async def _run_scenario(url: str, scenario: ModuleType, backend: str) -> tuple[list[Result], str]:
    async with pulse_trio.connect(url) as client:
        raw = await client.execute("INFO", "server")
        info = dict(line.partition(":")[::2] for line in _as_text(raw).splitlines() if ":" in line)
        version = str(info.get("valkey_version") or info.get("redis_version") or "?")
        run_url = getattr(scenario, "run_url", None)
        if run_url is None:
            run: ScenarioRun = scenario.run
            return await run(client, backend), version
        if "+cluster" in url:
            print(f"  .. {scenario.NAME}: standalone servers only, skipped", file=sys.stderr)
            return [], version
        rows: list[Result] = await run_url(url, backend)
        return rows, version


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def _format_value(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.3f}"
    if unit == "x":
        return f"{value:.1f}"
    return f"{value:,.0f}"


def _table(results: list[Result], backends: Sequence[str]) -> str:
    rows: dict[tuple[str, str, str], dict[str, float]] = {}
    for r in results:
        rows.setdefault((r.scenario, r.metric, r.unit), {})[r.backend] = r.value
    header = ["scenario", "metric", *backends, "unit"]
    lines = [
        [scenario, metric, *(_format_value(v[b], unit) if b in v else "-" for b in backends), unit]
        for (scenario, metric, unit), v in rows.items()
    ]
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(len(header))]
    numeric = set(range(2, 2 + len(backends)))

    def fmt(row: list[str]) -> str:
        cells = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(line) for line in lines)])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; return the process exit code."""
    args = _parse(argv)
    scenarios = [SCENARIOS[name] for name in (args.scenario or sorted(SCENARIOS))]
    backends: list[str] = args.backend or list(BACKENDS)
    started_at = datetime.now(UTC)
    results: list[Result] = []
    server_version = "?"
    clock = time.perf_counter()
    with _server(args.redis_url, args.cluster) as (url, server_description):
        print(f"server: {server_description} ({url})", file=sys.stderr)
        for backend in backends:
            for scenario in scenarios:
                print(f"[{backend}] {scenario.NAME}", file=sys.stderr, flush=True)
                rows, server_version = anyio.run(
                    _run_scenario, url, scenario, backend, backend=backend
                )
                results += rows
    elapsed = time.perf_counter() - clock
    print()
    print(_table(results, backends))
    print(f"\n({elapsed:.1f} s; server {server_description.split(' ')[0]} {server_version})")
    if not args.no_json:
        report: dict[str, Any] = {
            "started_at": started_at.isoformat(),
            "elapsed_s": round(elapsed, 2),
            "argv": sys.argv[1:] if argv is None else list(argv),
            "git_commit": _git_commit(),
            "python": sys.version,
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
            "versions": {
                name: importlib.metadata.version(name)
                for name in ("pulse-trio", "coredis", "anyio", "trio", "hiredis", "redis")
            },
            "server": {"description": server_description, "version": server_version},
            "constants": {s.NAME: s.CONSTANTS for s in scenarios},
            "results": [attrs.asdict(r) for r in results],
        }
        RESULTS_DIR.mkdir(exist_ok=True)
        path = RESULTS_DIR / f"{started_at:%Y%m%dT%H%M%SZ}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
