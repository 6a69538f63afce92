"""Validation of names and durations, done before any I/O.

The naming rule is goa.design/pulse's, so Go and Python processes accept the same names:
1 to 512 characters, none of space, NUL, ``*``, ``?``, ``[`` or ``]``.
"""

from __future__ import annotations

import math
import re

from ._errors import InvalidNameError

MAX_NAME_LENGTH = 512
NAME_RULE = "1 to 512 characters, none of space, NUL, '*', '?', '[' or ']'"
_NAME_RE = re.compile(r"[^ \x00*?\[\]]{1,512}")


def validate_name(kind: str, name: object) -> str:
    """Return ``name`` if it is a valid map/stream/sink name, else raise.

    Args:
        kind: What the name is for, used in the error message ("map", "stream", "sink").
        name: The candidate name.

    Returns:
        The name, unchanged.

    Raises:
        InvalidNameError: ``name`` is not a ``str`` or breaks the naming rule.
    """
    if not isinstance(name, str):
        raise InvalidNameError(kind, name, f"must be a str, not {type(name).__name__}")
    if _NAME_RE.fullmatch(name) is None:
        raise InvalidNameError(kind, name, f"must be {NAME_RULE}")
    return name


def validate_duration(what: str, value: float | None, *, allow_zero: bool = True) -> float | None:
    """Check a duration given in seconds.

    Args:
        what: The argument's name, for the message.
        value: Seconds, or ``None`` for "not set".
        allow_zero: Whether ``0`` is accepted.

    Returns:
        The value as a float, or ``None``.

    Raises:
        ValueError: The value is negative, not finite, zero when zero is not allowed, or not
            a number.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number of seconds, not {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a finite number of seconds >= 0, got {value!r}")
    if seconds == 0 and not allow_zero:
        raise ValueError(f"{what} must be > 0 seconds, got {value!r}")
    return seconds


def ttl_script_args(ttl: float | None, sliding_ttl: float | None) -> tuple[str, str]:
    """Return the ``(mode, milliseconds)`` pair that the Lua scripts take for a key's TTL.

    ``("abs", ms)`` sets the TTL only when the key has none (so it counts from creation),
    ``("slide", ms)`` refreshes it on every write, ``("", "0")`` leaves the key alone.
    Durations are validated seconds (see :func:`validate_duration`), at most one of them set.
    """
    if ttl is not None:
        return "abs", str(max(1, math.ceil(ttl * 1000)))
    if sliding_ttl is not None:
        return "slide", str(max(1, math.ceil(sliding_ttl * 1000)))
    return "", "0"
