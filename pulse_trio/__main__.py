"""``python -m pulse_trio``: the ``pulse-trio`` command (see :mod:`pulse_trio.cli`)."""

import sys

from pulse_trio.cli import main

sys.exit(main())
