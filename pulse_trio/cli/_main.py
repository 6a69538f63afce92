"""The command's entry point; it imports nothing of the ``cli`` extra until it is known to
be installed."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

#: The line printed when the ``cli`` extra is not installed.
MISSING_EXTRA = "pulse-trio: the command line needs the 'cli' extra: pip install 'pulse-trio[cli]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pulse-trio`` command line and return its exit status.

    Args:
        argv: The arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 for a runtime error (Redis unreachable, credentials refused, a name
        not found...), 2 for a usage error (an unknown option, a malformed URL). Errors are
        one line on stderr; ``--debug`` adds the traceback.
    """
    if importlib.util.find_spec("rich") is None:
        print(MISSING_EXTRA, file=sys.stderr)
        return 1
    from ._app import run

    return run(list(sys.argv[1:] if argv is None else argv))
