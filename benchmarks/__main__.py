"""Benchmark runner: ``python -m benchmarks [--quick] [--only NAMES] [--json FILE] [--plots DIR]``.

Runs pulse-trio side by side with go-pulse (the real goa.design/pulse v1.6.5), the Python
job queues (streaq, taskiq, saq, arq) and the floors (raw clients, ``redis-benchmark``,
``dict``) on one server: an embedded one unless ``--redis-url`` is given. Every scenario
measures its systems interleaved round by round after a warm-up round, and reports the
median and spread of the rounds. Peers that are not installed are skipped with the reason.
See benchmarks/README.md for the scenarios, the systems' configurations and the JSON.
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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread

import pulse_trio
import pulse_trio.testing

from ._runner import Case, Env, Progress, Report, run_scenarios, table
from ._scenarios import BUILDERS
from ._systems import SYSTEMS, Systems

#: Scenarios of ``--quick`` (all but the slow scaling and failover ones).
QUICK = tuple(name for name in BUILDERS if name not in ("scale", "scale.cluster", "pool.failover"))
#: The previous runner's ``--scenario`` names and the scenarios that replace them.
OLD_SCENARIOS = {
    "client": ("stream.add",),
    "pool": ("jobs.throughput", "jobs.latency", "pool.failover"),
    "rmap": ("rmap.get", "rmap.propagation", "rmap.join"),
    "streaming": ("stream.add", "stream.add_many", "stream.sink", "stream.latency"),
}
#: Packages whose versions go into the JSON's ``machine`` entry (when installed).
VERSIONED = (
    "pulse-trio", "anyio", "trio", "hiredis", "coredis", "redis",
    "streaq", "taskiq", "taskiq-redis", "saq", "arq",
)  # fmt: skip


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a reduced set with smaller counts (under 3 minutes on 2 cores)",
    )
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help="comma-separated scenarios to run (default: all; see --list), or cases of one "
        "(the name in the results' scenario column, e.g. scale.rebalance)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(OLD_SCENARIOS),
        help="the previous runner's scenario groups (repeatable), kept for old command lines: "
        "each maps to the new scenarios of its package",
    )
    parser.add_argument("--list", action="store_true", help="print the scenarios and exit")
    parser.add_argument("--json", metavar="FILE", type=Path, help="write the results as JSON")
    parser.add_argument("--plots", metavar="DIR", type=Path, help="write PNG plots here")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("PULSE_REDIS_URL"),
        help="server to use (default: $PULSE_REDIS_URL, else a throwaway embedded server); "
        "benchmarks only touch keys named bench-*, and delete them",
    )
    parser.add_argument(
        "--backend",
        choices=("trio", "asyncio"),
        default="trio",
        help="the AnyIO backend pulse-trio runs on (default: trio)",
    )
    parser.add_argument(
        "--without",
        metavar="SYSTEMS",
        default="",
        help="comma-separated systems to treat as not installed (skipped with that reason)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny counts and one round: checks that everything runs, measures nothing "
        "(the test suite uses it)",
    )
    return parser.parse_args(argv)


def _names(text: str | None, known: Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(
            f"python -m benchmarks: unknown {what} {', '.join(unknown)} (known: {', '.join(known)})"
        )
    return names


def _scenario_names(text: str | None) -> tuple[list[str], dict[str, set[str]]]:
    """``--only``: the scenarios to run, and for those named by their cases (``scale.rebalance``,
    a case of ``scale``), the cases to keep."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    scenarios: list[str] = []
    cases: dict[str, set[str]] = {}
    for name in names:
        if name in BUILDERS:
            owner, case = name, None
        else:
            owners = [b for b in BUILDERS if name.startswith(b + ".")]
            owner, case = (max(owners, key=len), name) if owners else ("", None)
        if not owner:
            _names(name, list(BUILDERS), "scenario")  # raises, naming the known ones
        if owner not in scenarios:
            scenarios.append(owner)
        if case is not None:
            cases.setdefault(owner, set()).add(case)
    # A scenario also named whole runs whole.
    return scenarios, {k: v for k, v in cases.items() if k not in names}


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


def _server_version(url: str) -> str:
    async def main() -> str:
        async with pulse_trio.connect(url) as client:
            raw = await client.execute("INFO", "server")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        info = dict(line.partition(":")[::2] for line in text.splitlines() if ":" in line)
        return str(info.get("valkey_version") or info.get("redis_version") or "?").strip()

    return anyio.run(main, backend="trio")


def _machine(backend: str) -> dict[str, Any]:
    versions = {}
    for name in VERSIONED:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    go = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        go_binary = "go" if not Path("/usr/local/go/bin/go").is_file() else "/usr/local/go/bin/go"
        go = subprocess.run(
            [go_binary, "version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "pulse_trio_backend": backend,
        "git_commit": _git_commit(),
        "go": go,
        "versions": versions,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks (``python -m benchmarks`` and ``pulse-trio bench``).

    Args:
        argv: The command-line arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        The process exit code: 0 when the run completed (skipped systems included).
    """
    args = _parse(argv)
    if args.list:
        for name in BUILDERS:
            print(name + ("" if name in QUICK else "   (not in --quick)"))
        return 0
    only, cases = _scenario_names(args.only)
    for group in args.scenario or ():
        only += [name for name in OLD_SCENARIOS[group] if name not in only]
    without = frozenset(_names(args.without, list(SYSTEMS), "system"))
    selected = only or list(QUICK if args.quick else BUILDERS)
    size = "smoke" if args.smoke else "quick" if args.quick else "full"
    systems = Systems(without)
    report = Report()
    clock = time.perf_counter()
    try:
        with _server(args.redis_url, False) as (url, server_description):
            print(f"server: {server_description} ({url})", file=sys.stderr)
            version = _server_version(url)
            with contextlib.ExitStack() as stack:
                cluster_url = None
                if "scale.cluster" in selected:
                    # Always an embedded cluster (also with --redis-url): 3 masters, local.
                    cluster_url, _ = stack.enter_context(_server(None, True))
                env = Env(
                    url=url,
                    size=size,
                    backend=args.backend,
                    systems=systems,
                    cluster_url=cluster_url,
                )
                scenarios: dict[str, list[Case]] = {name: BUILDERS[name](env) for name in selected}
                for name, wanted in cases.items():
                    scenarios[name] = [c for c in scenarios[name] if c.scenario in wanted]
                    if not scenarios[name]:
                        raise SystemExit(
                            f"python -m benchmarks: no case {', '.join(sorted(wanted))} "
                            f"in scenario {name}"
                        )
                run_scenarios(scenarios, env, report, Progress())
    finally:
        systems.close()
    elapsed = time.perf_counter() - clock
    print()
    print(table(report.results))
    if report.skipped:
        print("\nskipped:")
        lines = {f"  {e['scenario']}: {e['system']}: {e['reason']}" for e in report.skipped}
        print("\n".join(sorted(lines)))
    durations = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in report.elapsed.items())
    print(f"\n({elapsed:.1f} s: {durations}; server {version}; {size} size)")
    document = {
        "redis": {"version": version, "server": server_description},
        "machine": _machine(args.backend),
        "quick": bool(args.quick),
        "results": report.results,
        "skipped": report.skipped,
        "elapsed_s": round(elapsed, 1),
        "elapsed_by_scenario_s": report.elapsed,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results written to {args.json}")
    if args.plots is not None:
        try:
            from ._plots import write_plots
        except ImportError:
            print("plots skipped: matplotlib not installed (pip install -e '.[bench]')")
        else:
            written = write_plots(report, args.plots)
            print(f"{len(written)} plots written to {args.plots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
