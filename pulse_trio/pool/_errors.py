"""The errors of :mod:`pulse_trio.pool` (all :class:`PoolError`, itself a ``PulseError``)."""

from __future__ import annotations

from .._errors import ClosedError, PulseError


class PoolError(PulseError):
    """Root of the pool's errors.

    Attributes:
        key: The job key concerned, or ``None``.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class InvalidJobKeyError(PoolError, ValueError):
    """A job key breaks the rule (1 to 1024 characters, no NUL, text that reads back
    unchanged from Redis: see :func:`pulse_trio.pool.open_node`); nothing was sent.

    Attributes:
        key: The rejected key.
    """

    def __init__(self, key: str, rule: str) -> None:
        super().__init__(f"invalid job key {key!r}: {rule}", key=key)


class JobExistsError(PoolError):
    """A job with this key already exists in the pool (running, queued or failed)."""


class JobStartError(PoolError):
    """The worker's handler raised in ``start``; the message is the handler's.

    Attributes:
        key: The job key.
        handler_message: The text of the handler's exception.
    """

    def __init__(self, key: str, handler_message: str) -> None:
        super().__init__(f"job {key!r} failed to start: {handler_message}", key=key)
        self.handler_message = handler_message


class DispatchTimeoutError(PoolError):
    """No worker took the job within the timeout; the job was withdrawn and will not start."""


class QueueFullError(PoolError):
    """``max_queued_jobs`` jobs are waiting to start: the dispatch was refused, retry later."""


class PoolClosedError(PoolError, ClosedError):
    """The node's ``async with`` block is not running (not entered yet, or left)."""


class PoolShuttingDownError(PoolError):
    """The pool is being (or was just) shut down: no dispatch, no joining."""


class JobNotFoundError(PoolError):
    """No job with this key exists in the pool."""


class JobStopError(PoolError):
    """The handler raised in ``stop``; the job was removed from the pool anyway.

    Attributes:
        key: The job key.
        handler_message: The text of the handler's exception.
    """

    def __init__(self, key: str, handler_message: str) -> None:
        super().__init__(f"job {key!r}: the handler's stop failed: {handler_message}", key=key)
        self.handler_message = handler_message


class NotificationError(PoolError):
    """The handler raised in ``handle_notification`` (or has no such method)."""
