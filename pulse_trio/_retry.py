"""How long to wait before trying an operation again (which errors are worth it: see
:mod:`pulse_trio._boundary`)."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, *, base: float = 0.05, cap: float = 5.0) -> float:
    """Half-to-full jittered exponential backoff for retry number ``attempt`` (0-based)."""
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    return random.uniform(ceiling / 2, ceiling)
