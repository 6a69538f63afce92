"""The error hierarchy shared by every pulse-trio package.

One root, :class:`PulseError`; families by cause. Validation errors are also
:class:`ValueError`; "you closed it" errors are also :class:`anyio.ClosedResourceError`.
"""

from __future__ import annotations

import anyio


class PulseError(Exception):
    """Root of every error raised by pulse-trio."""


class InvalidNameError(PulseError, ValueError):
    """A map, stream or sink name breaks the naming rule.

    Attributes:
        name: The rejected name.
        kind: What the name was for ("map", "stream", "sink", ...).
    """

    def __init__(self, kind: str, name: object, rule: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"invalid {kind} name {name!r}: {rule}")


class UnencodableTextError(PulseError, ValueError):
    """A ``str`` cannot be written to Redis: it holds surrogate code points that stand for no
    bytes (``"\\ud800"``, or a surrogate pair kept as two code points).

    Raised by the transport, in the caller's own task, before the command joins any write;
    the validation of names, keys and values refuses such text earlier, with the error of
    the field (see :mod:`pulse_trio._names`).

    Attributes:
        value: The rejected text.
    """

    def __init__(self, value: str, what: str = "argument") -> None:
        self.value = value
        super().__init__(
            f"cannot send {what} {value!r} to Redis: it holds surrogates that stand for no "
            "bytes (only U+DC80..U+DCFF, the undecodable bytes of text read from Redis, can be "
            "written back)"
        )


class ClosedError(PulseError, anyio.ClosedResourceError):
    """An operation was attempted on an object whose ``async with`` block has exited."""


class RedisUnavailableError(PulseError):
    """Redis could not be reached (connection refused, lost or timed out) for an operation.

    Local reads keep working; background tasks reconnect on their own. Retry the operation
    later.
    """


class RedisCommandError(PulseError):
    """Redis rejected a command with an error that pulse-trio does not expect.

    For example an ACL denial (``NOPERM``), ``OOM`` when the server is out of memory, or a
    key that another program filled with a value of the wrong type. The message holds
    Redis's answer; the client's own exception is chained as ``__cause__``.
    """
