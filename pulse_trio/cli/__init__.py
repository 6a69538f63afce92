"""The ``pulse-trio`` command: ``demo``, ``inspect`` and ``bench`` (see ``docs/cli.md``).

Installed as the ``pulse-trio`` console script and run by ``python -m pulse_trio``. It needs
the optional ``cli`` extra (``pip install 'pulse-trio[cli]'``) for its tables and live views.
"""

from ._main import main as main

__all__ = ("main",)
