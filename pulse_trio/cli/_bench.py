"""``pulse-trio bench``: hands its arguments to the benchmark runner of a source checkout.

The runner lives in ``benchmarks/`` at the root of the repository, next to the
``pulse_trio`` package; it is not installed with the package.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

import pulse_trio

from ._common import CliError

#: How to get a checkout that has the runner.
CHECKOUT_HINT = (
    "pulse-trio bench runs from a source checkout: git clone the pulse-trio repository, "
    "then pip install -e '.[bench]' in it and run pulse-trio bench there"
)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``bench`` to the subcommands (for ``--help``; :func:`run` does the work)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "bench",
        help="run the benchmarks (from a source checkout; arguments go to the runner, "
        "'pulse-trio bench --help' lists them)",
        add_help=False,
    )
    return parser


def benchmarks_dir() -> Path:
    """Where the runner is in a source checkout (it may not exist)."""
    return Path(pulse_trio.__file__).resolve().parent.parent / "benchmarks"


def run(argv: list[str]) -> int:
    """Run ``benchmarks.__main__.main(argv)`` of the checkout, or explain why not."""
    root = benchmarks_dir()
    if not (root / "__main__.py").is_file():
        raise CliError(CHECKOUT_HINT)
    parent = str(root.parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)
    runner = importlib.import_module("benchmarks.__main__")
    status = runner.main(argv)
    return int(status or 0)
