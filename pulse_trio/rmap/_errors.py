"""The errors specific to replicated maps, and the validation of keys and values."""

from __future__ import annotations

from .._errors import ClosedError, PulseError


class RMapError(PulseError):
    """Root of the errors specific to replicated maps."""


class InvalidKeyError(RMapError, ValueError):
    """A key is empty, contains ``=``, or is not a ``str``.

    Attributes:
        key: The rejected key.
    """

    def __init__(self, key: object, rule: str) -> None:
        self.key = key
        super().__init__(f"invalid map key {key!r}: {rule}")


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
    """Return ``key`` if it can be a map key (non-empty ``str`` without ``=``), else raise.

    Raises:
        InvalidKeyError: The key breaks the rule.
    """
    if not isinstance(key, str):
        raise InvalidKeyError(key, f"keys are str, not {type(key).__name__}")
    if not key:
        raise InvalidKeyError(key, "keys must not be empty")
    if "=" in key:
        raise InvalidKeyError(key, "keys must not contain '=' (reserved for =rev and =kind)")
    return key


def validate_value(what: str, value: object) -> str:
    """Return ``value`` if it is a ``str``, else raise :class:`TypeError` naming ``what``."""
    if not isinstance(value, str):
        raise TypeError(f"map {what} must be a str, not {type(value).__name__}")
    return value
