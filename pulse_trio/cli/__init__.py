"""The ``pulse-trio`` command: ``demo``, ``inspect`` and ``bench`` (see ``docs/cli.md``).

Installed as the ``pulse-trio`` console script and run by ``python -m pulse_trio``. It needs
the optional ``cli`` extra (``pip install 'pulse-trio[cli]'``) for its tables and live views.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

__all__ = ("main",)

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
