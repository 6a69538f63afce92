"""Validation of names, text and durations, done before any I/O (the one place of the rules).

Names (of maps, streams, sinks, pools, tickers and producers) follow goa.design/pulse's
rule, so Go and Python processes accept the same names: 1 to 512 characters, none of space,
NUL, ``*``, ``?``, ``[`` or ``]``.

Which text can be written, by field (every package checks it here, before any I/O, and
raises a ``ValueError`` subclass naming the field):

- **Strict UTF-8** for names, event names and topics: the ``str`` must encode with
  ``encode("utf-8")``, i.e. hold no surrogate code point at all. Names are identifiers shared
  with Go; event names and topics are decoded strictly when read (an entry whose name is not
  UTF-8 is malformed), so nothing else could be read back.
- **Lossless** for map keys, map values (list items included) and job keys: the ``str`` must
  survive ``s.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape") == s``.
  That is the inverse of how they are read (:func:`pulse_trio._text.text`: bytes that are
  not UTF-8 become U+DC80..U+DCFF), so a key another process wrote with arbitrary bytes can
  be read and written back as it is. Refused: a lone surrogate outside U+DC80..U+DCFF (such
  as ``"\\ud800"``), a surrogate pair kept as two code points, and a run of U+DC80..U+DCFF
  that spells valid UTF-8 (it would read back as other text).

The transport writes every ``str`` argument as ``s.encode("utf-8", "surrogateescape")``
(:func:`pulse_trio._redis._resp.encode_command`), which agrees with both rules.
"""

from __future__ import annotations

import logging
import math
import re

from ._errors import InvalidNameError
from ._redis._settings import MAX_SECONDS

MAX_NAME_LENGTH = 512
#: What strict text is (names, event names, topics).
STRICT_TEXT_RULE = "must be UTF-8 text: no surrogate code points (U+D800..U+DFFF)"
#: What lossless text is (map keys and values, job keys).
LOSSLESS_TEXT_RULE = (
    "must be text that reads back unchanged from Redis: no surrogate code points but the "
    "U+DC80..U+DCFF that stand for bytes which are not UTF-8, and none of those spelling UTF-8"
)
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
        InvalidNameError: ``name`` is not a ``str``, breaks the naming rule, or is not
            strict UTF-8 text (see the module's docstring).
    """
    if not isinstance(name, str):
        raise InvalidNameError(kind, name, f"must be a str, not {type(name).__name__}")
    if _NAME_RE.fullmatch(name) is None:
        raise InvalidNameError(kind, name, f"must be {NAME_RULE}")
    if not is_strict_text(name):
        raise InvalidNameError(kind, name, STRICT_TEXT_RULE)
    return name


def is_strict_text(value: str) -> bool:
    """Whether ``value`` is strict UTF-8 text (encodes with ``encode("utf-8")``)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_lossless_text(value: str) -> bool:
    """Whether ``value`` can be written to Redis and read back unchanged (see the module's
    docstring): ``s.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")``
    gives ``s`` back."""
    if is_strict_text(value):
        return True  # no surrogate at all: UTF-8 round-trips
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return raw.decode("utf-8", "surrogateescape") == value


def text_problem(value: str, *, lossless: bool) -> str | None:
    """Why ``value`` cannot be written as text of its kind, or ``None`` if it can.

    Args:
        value: The text.
        lossless: ``True`` for the lossless rule (map keys and values, job keys), ``False``
            for strict UTF-8 (names, event names, topics).
    """
    if lossless:
        return None if is_lossless_text(value) else LOSSLESS_TEXT_RULE
    return None if is_strict_text(value) else STRICT_TEXT_RULE


def validate_duration(what: str, value: float | None, *, allow_zero: bool = True) -> float | None:
    """Check a duration given in seconds.

    Args:
        what: The argument's name, for the message.
        value: Seconds, or ``None`` for "not set".
        allow_zero: Whether ``0`` is accepted.

    Returns:
        The value as a float, or ``None``.

    Raises:
        ValueError: The value is negative, not finite, zero when zero is not allowed, past
            :data:`~pulse_trio._redis._settings.MAX_SECONDS` (about 31 years: surely a
            mistake), or not a number.
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
    if seconds > MAX_SECONDS:
        raise ValueError(f"{what} must be at most {MAX_SECONDS:g} seconds, got {value!r}")
    return seconds


def required_duration(what: str, value: object) -> float:
    """Like :func:`validate_duration` with ``allow_zero=False``, ``None`` refused too.

    Raises:
        ValueError: ``None``, or what :func:`validate_duration` refuses.
    """
    checked = validate_duration(what, value, allow_zero=False)  # type: ignore[arg-type]
    if checked is None:
        raise ValueError(f"{what} must be a number of seconds > 0, not None")
    return checked


def validate_logger(logger: object) -> None:
    """Check that ``logger`` is ``None``, a :class:`logging.Logger` or a ``LoggerAdapter``.

    Raises:
        TypeError: Anything else.
    """
    if logger is not None and not isinstance(logger, logging.Logger | logging.LoggerAdapter):
        raise TypeError(f"logger must be a logging.Logger, not {type(logger).__name__}")


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
