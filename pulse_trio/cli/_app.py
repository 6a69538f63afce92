"""The parser, the global options, and how errors become one line and an exit status."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import NoReturn

import pulse_trio

from . import _bench, _dashboard, _demo, _inspect
from ._common import CliError, UsageError, describe

#: Environment variable read when ``--redis-url`` is not given.
URL_ENV = "PULSE_REDIS_URL"

_DESCRIPTION = """\
pulse-trio: event streams, worker pools and replicated maps on Redis, for Trio and asyncio.

Commands need a Redis server: --redis-url, else $PULSE_REDIS_URL; `demo` starts a throwaway
embedded server when neither is given.
"""

_EPILOG = """\
exit status: 0 ok, 1 runtime error (Redis unreachable, credentials refused, not found...),
2 usage error (unknown option, malformed URL). See docs/cli.md.
"""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (and no ``SystemExit`` leak)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--redis-url",
        metavar="URL",
        default=default,
        help=f"the Redis server: redis://, rediss://, unix://, redis+cluster://, "
        f"redis+sentinel:// (default: ${URL_ENV})",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show the traceback of an error",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``pulse-trio`` parser with its subcommands."""
    parser = _Parser(
        prog="pulse-trio",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"pulse-trio {pulse_trio.__version__}"
    )
    _global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in (_demo, _inspect, _bench, _dashboard):
        sub = module.add_parser(commands)
        _global_options(sub, suppress=True)
    return parser


def _split_bench(argv: list[str]) -> tuple[list[str], list[str]] | None:
    """``(global options, bench arguments)`` when the command is ``bench``, else ``None``.

    ``bench`` hands every argument after it, ``--help`` included, to the benchmark runner.
    """
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--redis-url":
            index += 2
        elif arg == "--debug" or arg.startswith("--redis-url="):
            index += 1
        else:
            break
    if index < len(argv) and argv[index] == "bench":
        return argv[:index], argv[index + 1 :]
    return None


def _global_url(options: list[str]) -> str | None:
    for index, arg in enumerate(options):
        if arg == "--redis-url" and index + 1 < len(options):
            return options[index + 1]
        if arg.startswith("--redis-url="):
            return arg.partition("=")[2]
    return None


def run(argv: list[str]) -> int:
    """Parse ``argv``, run the command, and turn errors into a line and a status."""
    debug = "--debug" in argv
    try:
        bench = _split_bench(argv)
        if bench is not None:
            options, rest = bench
            url = _global_url(options)
            return _bench.run((["--redis-url", url] if url else []) + rest)
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version print, then exit 0
            return int(exc.code or 0)
        if args.command is None:
            parser.print_help()
            return 2
        url = args.redis_url or os.environ.get(URL_ENV) or None
        status: int = args.run(args, url)
        return status
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        _report(exc, debug)
        return exc.status
    except Exception as exc:
        _report(exc, debug)
        return 1


def _report(exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(exc)
    print(f"pulse-trio: error: {describe(exc)}", file=sys.stderr)
