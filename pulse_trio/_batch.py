"""Keeping one caller's bad part out of a write that several callers share (pure, no I/O).

Where several callers' requests are built into one write or one script call (a pool's
admission batch), each caller's part is checked here before it joins: a part that the
transport could not encode fails its own caller, with a pulse-trio error, and the batch goes
on without it. Validation (:mod:`pulse_trio._names`) refuses such values earlier; this is
the batch's own guard, so that no member can ever fail the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from ._errors import PulseError
from ._redis._resp import Arg, encode_text

_T = TypeVar("_T")


class UnsendableArgumentError(PulseError, TypeError):
    """A caller's part of a shared batch is of a type that cannot be sent to Redis."""


def check_arguments(parts: Iterable[Arg]) -> None:
    """Raise if any of ``parts`` cannot be encoded as a command argument.

    Raises:
        pulse_trio._errors.UnencodableTextError: A ``str`` holds surrogates that stand for
            no bytes (a ``ValueError``).
        UnsendableArgumentError: A part is none of bytes, str, int, float, memoryview.
    """
    for part in parts:
        if isinstance(part, str):
            encode_text(part)
        elif type(part) is bool or not isinstance(part, bytes | int | float | memoryview):
            raise UnsendableArgumentError(
                f"cannot send {type(part).__name__} {part!r} to Redis: use bytes, str, int or float"
            )


def split_sendable(
    items: Sequence[_T], parts: Callable[[_T], Iterable[Arg]]
) -> tuple[list[_T], list[tuple[_T, PulseError]]]:
    """Split a batch into the items whose parts can all be sent and the others.

    Args:
        items: The callers' items, in batch order.
        parts: The command arguments an item contributes to the shared write.

    Returns:
        ``(kept, refused)``: the sendable items in order, and each other item with the
        error to give its caller.
    """
    kept: list[_T] = []
    refused: list[tuple[_T, PulseError]] = []
    for item in items:
        try:
            check_arguments(parts(item))
        except PulseError as exc:
            refused.append((item, exc))
        else:
            kept.append(item)
    return kept, refused
