"""``pulse-trio dashboard``: serve the read-only web dashboard of a live deployment.

Starlette on Hypercorn's Trio worker (the ``dashboard`` extra); see
:mod:`pulse_trio.dashboard` and ``docs/observability.md``.
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Any

import anyio

from ._common import CliError, UsageError, check_url, connected, redact

#: Default port of the dashboard.
DEFAULT_PORT = 8471
#: Default address it binds to: this machine only.
DEFAULT_HOST = "127.0.0.1"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port < 65536:
        raise argparse.ArgumentTypeError(f"port {port} is out of range (0 to 65535)")
    return port


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"the interval must be 0.1 to 3600 seconds, not {text}")
    return value


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``dashboard`` to the subcommands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "dashboard",
        help="serve a read-only web dashboard of a live deployment",
        description="Serve a read-only web dashboard of the pools, streams and maps of a "
        "live deployment, refreshed every second (needs the 'dashboard' extra). It needs a "
        "Redis server (--redis-url or $PULSE_REDIS_URL): an embedded empty server would show "
        "nothing. It binds to 127.0.0.1 by default and has no authentication of its own: "
        "put a reverse proxy with authentication in front of it to share it "
        "(docs/observability.md).",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--interval",
        type=_interval,
        default=1.0,
        metavar="SECONDS",
        help="seconds between two snapshots of the deployment (default 1)",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace, url: str | None) -> int:
    """Run ``dashboard`` (on Trio: Hypercorn's Trio worker)."""
    if url is None:
        raise UsageError(
            "dashboard needs a Redis server: give --redis-url URL or set PULSE_REDIS_URL "
            "(it shows a live deployment; an embedded empty server would show nothing)"
        )
    check_url(url)
    try:
        import hypercorn  # noqa: F401
        import starlette  # noqa: F401
    except ImportError as exc:
        raise CliError(
            f"dashboard needs the 'dashboard' extra: pip install 'pulse-trio[dashboard]' "
            f"({exc.name} is missing)"
        ) from exc
    anyio.run(_serve, args, url, backend="trio")
    return 0


async def _serve(args: argparse.Namespace, url: str) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    from pulse_trio.dashboard import History, create_app, sample_forever

    host = f"[{args.host}]" if ":" in args.host else args.host
    config = Config()
    config.bind = [f"{host}:{args.port}"]
    config.accesslog = None
    config.errorlog = None
    async with connected(url) as client:
        history = History()
        app = create_app(history, title=f"pulse-trio · {redact(url)}")
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                functools.partial(sample_forever, interval=args.interval), client, history
            )
            binds = await tg.start(_serve_app, serve, app, config)
            for bind in binds:
                print(f"pulse-trio dashboard: serving {bind} (read-only), Ctrl-C to stop")
            sys.stdout.flush()


async def _serve_app(serve: Any, app: Any, config: Any, *, task_status: Any) -> None:
    await serve(app, config, task_status=task_status)
