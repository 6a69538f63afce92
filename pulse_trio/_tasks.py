"""The task group that every pulse-trio context manager owns."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import anyio.abc


@contextlib.asynccontextmanager
async def owned_task_group() -> AsyncIterator[anyio.abc.TaskGroup]:
    """A task group for an object's background tasks, cancelled when the block exits.

    An ordinary exception raised by the ``async with`` body itself comes out as it is, not
    wrapped in an exception group (the background tasks are simply cancelled). Failures of
    the background tasks still come out as an exception group, together with the body's
    exception if both happened. Cancellation and other ``BaseException`` s pass unchanged.
    """
    body_error: Exception | None = None
    try:
        async with anyio.create_task_group() as tg:
            try:
                yield tg
            except Exception as exc:
                body_error = exc
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if body_error is not None:
            raise BaseExceptionGroup(
                "errors in a pulse-trio block and its background tasks",
                [body_error, *group.exceptions],
            ) from None
        raise
    if body_error is not None:
        raise body_error
