"""``pulse-trio inspect``: what a live deployment holds, as tables or JSON (read-only)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from pulse_trio import admin

from ._common import (
    NotFoundError,
    UsageError,
    add_backend_option,
    check_url,
    connected,
    console,
)
from ._common import run_async as _run_async

KINDS: tuple[admin.Kind, ...] = ("pools", "streams", "maps")
#: Default refresh period of ``--watch``, in seconds.
DEFAULT_WATCH = 2.0
#: Characters of a map value shown without ``--values``.
VALUE_WIDTH = 60
#: Keys of a map shown without ``--values``.
MAX_KEYS = 20
#: Job keys listed per worker in the tables.
MAX_JOB_KEYS = 8

_SINGULAR = {"pools": "pool", "streams": "stream", "maps": "map"}


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``inspect`` to the subcommands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "inspect",
        help="show the pools, streams and maps of a live deployment (read-only)",
        description="Show what a live deployment holds, found by SCAN on every primary: "
        "pools (nodes, workers, jobs per worker, queued and failed jobs, tickers), streams "
        "(length, first and last id, sinks with consumers, pending, lag, idle time, dead "
        "letters) and maps (size, revision, content). Nothing is written to Redis.",
    )
    parser.add_argument(
        "kind", nargs="?", choices=KINDS, help="only pools, streams or maps (default: all three)"
    )
    parser.add_argument("name", nargs="?", help="only the pool, stream or map of this name")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON instead of tables (the shape is documented in docs/cli.md)",
    )
    parser.add_argument(
        "--values",
        action="store_true",
        help=f"show every key and full values of maps (default: {MAX_KEYS} keys, values cut "
        f"to {VALUE_WIDTH} characters)",
    )
    parser.add_argument(
        "--watch",
        nargs="?",
        type=_period,
        const=DEFAULT_WATCH,
        metavar="SECONDS",
        help=f"refresh in place every SECONDS (default {DEFAULT_WATCH:g}) until Ctrl-C; "
        "with --json, print one JSON document per line",
    )
    parser.add_argument(
        "--count",
        type=int,
        metavar="N",
        help="with --watch: stop after N refreshes (default: run until interrupted)",
    )
    add_backend_option(parser)
    parser.set_defaults(run=run)
    return parser


def _period(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {raw!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"the period must be positive, not {raw}")
    return value


def run(args: argparse.Namespace, url: str | None) -> int:
    """Run ``inspect`` (the parsed arguments, the server's URL)."""
    if url is None:
        raise UsageError(
            "inspect needs a Redis server: give --redis-url URL or set PULSE_REDIS_URL"
        )
    if args.name is not None and args.kind is None:
        raise UsageError("give the kind before a name: inspect pools|streams|maps NAME")
    if args.count is not None and (args.watch is None or args.count < 1):
        raise UsageError("--count N needs --watch and N >= 1")
    check_url(url)
    return _run_async(args, _inspect, args, url)


async def take(client: Any, kinds: Sequence[admin.Kind], name: str | None) -> admin.Snapshot:
    """A snapshot of ``kinds`` (only ``name`` when given)."""
    snap = await admin.snapshot(client, ())
    return admin.Snapshot(
        taken_at=snap.taken_at,
        pools=await admin.pools(client, name) if "pools" in kinds else (),
        streams=await admin.streams(client, name) if "streams" in kinds else (),
        maps=await admin.maps(client, name) if "maps" in kinds else (),
    )


def as_json(snap: admin.Snapshot, kinds: Sequence[admin.Kind]) -> dict[str, Any]:
    """The ``--json`` document: ``version``, ``taken_at`` and the kinds asked for."""
    data: dict[str, Any] = admin.to_json(snap)
    return {k: v for k, v in data.items() if k in ("version", "taken_at", *kinds)}


async def _inspect(args: argparse.Namespace, url: str) -> int:
    kinds: tuple[admin.Kind, ...] = (args.kind,) if args.kind else KINDS
    async with connected(url) as client:
        if args.watch is None:
            snap = await _take_checked(client, kinds, args)
            _print(snap, kinds, args)
            return 0
        if args.json:
            count = 0
            while True:
                snap = await _take_checked(client, kinds, args)
                print(json.dumps(as_json(snap, kinds)), flush=True)
                count += 1
                if args.count is not None and count >= args.count:
                    return 0
                await anyio.sleep(args.watch)
        from rich.live import Live

        out = console()
        snap = await _take_checked(client, kinds, args)
        if not out.is_terminal:
            # No terminal to redraw in place (a pipe, a file): one block per refresh.
            count = 1
            out.print(render(snap, kinds, args))
            sys.stdout.flush()
            while args.count is None or count < args.count:
                await anyio.sleep(args.watch)
                snap = await _take_checked(client, kinds, args)
                out.print(render(snap, kinds, args))
                sys.stdout.flush()
                count += 1
            return 0
        with Live(render(snap, kinds, args), console=out, auto_refresh=False) as live:
            count = 1
            while args.count is None or count < args.count:
                await anyio.sleep(args.watch)
                snap = await _take_checked(client, kinds, args)
                live.update(render(snap, kinds, args), refresh=True)
                count += 1
        return 0


async def _take_checked(
    client: Any, kinds: Sequence[admin.Kind], args: argparse.Namespace
) -> admin.Snapshot:
    snap = await take(client, kinds, args.name)
    if args.name is not None:
        kind = kinds[0]
        if not getattr(snap, kind):
            raise NotFoundError(
                f"no {_SINGULAR[kind]} named {args.name!r} ('pulse-trio inspect {kind}' lists them)"
            )
    return snap


def _print(snap: admin.Snapshot, kinds: Sequence[admin.Kind], args: argparse.Namespace) -> None:
    if args.json:
        json.dump(as_json(snap, kinds), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    console().print(render(snap, kinds, args))


# --------------------------------------------------------------------------- tables


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} s"


def _cut(value: str, width: int) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


def render(snap: admin.Snapshot, kinds: Sequence[admin.Kind], args: argparse.Namespace) -> Any:
    """The tables of a snapshot, as one rich renderable."""
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = [Text(f"taken at {snap.taken_at:%Y-%m-%d %H:%M:%S} UTC", style="dim")]
    if "pools" in kinds:
        parts += _pools(snap.pools)
    if "streams" in kinds:
        parts += _streams(snap.streams)
    if "maps" in kinds:
        parts += _maps(snap.maps, full=args.values)
    return Group(*parts)


def _liveness(node: admin.NodeSnapshot) -> float | None:
    return node.lease_left if node.lease_left is not None else node.heartbeat_age


def _pools(pools: Sequence[admin.PoolSnapshot]) -> list[Any]:
    from rich.table import Table
    from rich.text import Text

    if not pools:
        return [Text("no pools")]
    out: list[Any] = []
    for pool in pools:
        layout = "" if pool.layout == "pulse-trio" else " (goa.design/pulse)"
        title = (
            f"pool {pool.name}{layout}: {len(pool.nodes)} nodes, {len(pool.workers)} workers, "
            f"{len(pool.jobs)} jobs, {pool.queued} queued, {len(pool.failed)} failed"
            + (", SHUTTING DOWN" if pool.shutting_down else "")
        )
        out.append(Text(title, style="bold"))
        table = Table()
        table.add_column("worker")
        table.add_column("node")
        if pool.layout == "pulse-trio":
            table.add_column("lease left", justify="right")
        else:
            table.add_column("heartbeat age", justify="right")
        table.add_column("jobs", justify="right")
        table.add_column("job keys")
        for worker in pool.workers:
            keys = ", ".join(worker.jobs[:MAX_JOB_KEYS])
            if len(worker.jobs) > MAX_JOB_KEYS:
                keys += f", … {len(worker.jobs) - MAX_JOB_KEYS} more"
            liveness = worker.lease_left if pool.layout == "pulse-trio" else worker.heartbeat_age
            table.add_row(
                worker.id,
                worker.node_id or "-",
                _seconds(liveness),
                str(len(worker.jobs)),
                keys,
            )
        if pool.workers:
            out.append(table)
        else:
            out.append(Text("  no workers: jobs wait until a node with workers joins"))
        idle_nodes = [n for n in pool.nodes if not n.workers]
        if idle_nodes:
            names = ", ".join(f"{n.id} ({_seconds(_liveness(n))})" for n in idle_nodes)
            out.append(Text(f"  nodes without workers: {names}"))
        waiting = [j for j in pool.jobs if j.worker_id is None and j.state != "failed"]
        if waiting:
            out.append(Text("  waiting: " + ", ".join(f"{j.key} ({j.state})" for j in waiting)))
        for job in pool.jobs:
            if job.state == "failed":
                out.append(Text(f"  failed: {job.key} after {job.failures} starts: {job.error}"))
        if pool.tickers:
            out.append(Text("  tickers: " + ", ".join(pool.tickers)))
    return out


def _streams(streams: Sequence[admin.StreamSnapshot]) -> list[Any]:
    from rich.table import Table
    from rich.text import Text

    if not streams:
        return [Text("no streams")]
    table = Table(title="streams", title_justify="left", title_style="bold")
    for column in ("stream", "length", "first id", "last id", "sinks"):
        table.add_column(column, justify="right" if column == "length" else "left")
    for stream in streams:
        name = stream.name + (" (dead letters)" if stream.dead_letter else "")
        table.add_row(
            name,
            str(stream.length),
            stream.first_id or "-",
            stream.last_id or "-",
            str(len(stream.sinks)),
        )
    out: list[Any] = [table]
    sinks = Table(title="sinks", title_justify="left", title_style="bold")
    for column in ("stream", "sink", "consumers", "pending", "lag", "idle", "dead letters"):
        sinks.add_column(column, justify="left" if column in ("stream", "sink") else "right")
    for stream in streams:
        for sink in stream.sinks:
            consumers = ", ".join(f"{c.name} ({c.pending})" for c in sink.consumers) or "0"
            sinks.add_row(
                stream.name,
                sink.name,
                f"{len(sink.consumers)}: {consumers}" if sink.consumers else "0",
                str(sink.pending),
                "?" if sink.lag is None else str(sink.lag),
                _seconds(sink.idle),
                str(sink.dead_letters),
            )
    if sinks.row_count:
        out.append(sinks)
    return out


def _maps(maps: Sequence[admin.MapSnapshot], *, full: bool) -> list[Any]:
    from rich.table import Table
    from rich.text import Text

    if not maps:
        return [Text("no maps")]
    out: list[Any] = []
    for m in maps:
        out.append(Text(f"map {m.name}: {m.size} keys, revision {m.revision}", style="bold"))
        table = Table()
        table.add_column("key")
        table.add_column("value", overflow="fold")
        items = list(m.values.items())
        shown = items if full else items[:MAX_KEYS]
        for key, value in shown:
            table.add_row(key, value if full else _cut(value, VALUE_WIDTH))
        if items:
            out.append(table)
        if len(shown) < len(items):
            out.append(Text(f"  … {len(items) - len(shown)} more keys (--values shows all)"))
    return out
