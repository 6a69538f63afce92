"""The errors specific to replicated maps, and the validation of keys and values."""

from __future__ import annotations

from .._errors import ClosedError, PulseError
from .._names import text_problem


class RMapError(PulseError):
    """Root of the errors specific to replicated maps."""


class InvalidKeyError(RMapError, ValueError):
    """A key is empty, contains ``=``, is not a ``str``, or is text that would not read back
    unchanged (see :func:`validate_key`).

    Attributes:
        key: The rejected key.
    """

    def __init__(self, key: object, rule: str) -> None:
        self.key = key
        super().__init__(f"invalid map key {key!r}: {rule}")


class InvalidValueError(RMapError, ValueError):
    """A value (or list item, or test value) is text that would not read back unchanged from
    Redis (see :func:`validate_value`); nothing was written.

    Attributes:
        value: The rejected value.
    """

    def __init__(self, what: str, value: str, rule: str) -> None:
        self.value = value
        super().__init__(f"invalid map {what} {value!r}: {rule}")


class MapClosedError(RMapError, ClosedError):
    """A write on a map outside its ``async with rmap.join(...)`` block.

    After the block, reads keep returning the last state; join the map again to write.
    """


class MapValueError(RMapError, ValueError):
    """The stored value is not what the operation needs (nothing was changed).

    For example :meth:`Map.inc` on a value that is not an integer, or a list operation on a
    value that is a JSON document other than a list of strings. (goa.design/pulse v1.6.5's
    ``AppendValues`` writes to such a value anyway and its ``RemoveValues`` removes nothing;
    both sides *read* such a value alike, split on commas: see ``Map.get_values``.)

    Attributes:
        key: The key whose value was unsuitable.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


def validate_key(key: object) -> str:
    """Return ``key`` if it can be a map key, else raise.

    A key is a non-empty ``str`` without ``=``, of lossless text (it survives
    ``encode("utf-8", "surrogateescape")`` and back: see :mod:`pulse_trio._names`).

    Raises:
        InvalidKeyError: The key breaks the rule.
    """
    if not isinstance(key, str):
        raise InvalidKeyError(key, f"keys are str, not {type(key).__name__}")
    if not key:
        raise InvalidKeyError(key, "keys must not be empty")
    if "=" in key:
        raise InvalidKeyError(key, "keys must not contain '=' (reserved for =rev and =kind)")
    problem = text_problem(key, lossless=True)
    if problem is not None:
        raise InvalidKeyError(key, f"keys {problem}")
    return key


def validate_value(what: str, value: object) -> str:
    """Return ``value`` if it can be written as a map value (lossless text), else raise.

    Raises:
        TypeError: ``value`` is not a ``str`` (the message names ``what``).
        InvalidValueError: ``value`` would not read back unchanged (see
            :mod:`pulse_trio._names`).
    """
    if not isinstance(value, str):
        raise TypeError(f"map {what} must be a str, not {type(value).__name__}")
    problem = text_problem(value, lossless=True)
    if problem is not None:
        raise InvalidValueError(what.rstrip("s"), value, problem)
    return value
