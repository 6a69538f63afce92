"""The Redis calls that ``Stream``, ``Reader`` and ``Sink`` share, with their error mapping.

Replies are the transport's raw ones (see :meth:`pulse_trio.Client.execute`): the helpers
here turn the ``XINFO`` maps into ``dict``\\ s with text keys.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from .._boundary import (
    Client,
    ErrorMapping,
    as_dict,
    error_reply,
    is_no_such_key,
    text,
    to_pulse_error,
)
from ._event import NEWEST, StartPosition, start_to_id, wrong_type_error


def stream_errors(stream: str, operation: str) -> AbstractContextManager[None]:
    """Translate the client's errors of ``operation`` on ``stream`` into pulse-trio's.

    A plain object, not a generator: it is on every stream call's path, and builds the
    error's text only when there is an error.

    Raises:
        StreamError: The stream's key holds a value that is not a stream.
        pulse_trio.RedisUnavailableError: A transient error.
        pulse_trio.RedisCommandError: Any other error reply.
    """
    return _StreamErrors(stream, operation)


class _StreamErrors(ErrorMapping):
    __slots__ = ("_operation", "_stream")

    def __init__(self, stream: str, operation: str) -> None:
        self._stream = stream
        self._operation = operation

    def translate(self, exc: Exception) -> Exception:
        stream = self._stream
        return to_pulse_error(
            exc,
            f"stream {stream!r}: {self._operation}",
            wrong_type=lambda: wrong_type_error(stream),
        )


def info_map(reply: Any) -> dict[str, Any]:
    """One ``XINFO`` map (a RESP3 map, or a RESP2 flat list) with text keys."""
    return {text(k): v for k, v in as_dict(reply).items()}


def info_maps(reply: Any) -> list[dict[str, Any]]:
    """An ``XINFO GROUPS``/``XINFO CONSUMERS`` reply: one :func:`info_map` per item."""
    return [info_map(item) for item in reply or ()]


def is_redirect(exc: BaseException) -> bool:
    """Whether a cluster node answered ``MOVED``/``ASK`` on a dedicated connection.

    The transport learns the new owner from the answer; the blocking read is simply sent
    again (its next ``client.blocking(key=...)`` reaches the right node).
    """
    message = error_reply(exc)
    return message is not None and message.startswith(("MOVED ", "ASK "))


async def xinfo_stream(
    client: Client, stream: str, key: str, operation: str
) -> dict[str, Any] | None:
    """``XINFO STREAM`` as a dict with text keys, or ``None`` when the stream does not exist.

    Raises:
        StreamError, pulse_trio.RedisUnavailableError, pulse_trio.RedisCommandError:
            See :func:`stream_errors`.
    """
    with stream_errors(stream, operation):
        try:
            raw = await client.execute("XINFO", "STREAM", key)
        except Exception as exc:
            if is_no_such_key(exc):
                return None
            raise
    return info_map(raw)


async def last_generated_id(client: Client, stream: str, key: str) -> str:
    """The id a reader starting at NEWEST reads after (``"0-0"`` when there is no stream)."""
    info = await xinfo_stream(client, stream, key, "reading")
    if info is None:
        return "0-0"
    return text(info.get("last-generated-id") or "0-0")


async def resolve_start(client: Client, stream: str, key: str, start: StartPosition) -> str:
    """Return the concrete id to read strictly after, for a start position.

    The stream is looked at whatever the start, so that a wrong-type key or an unreachable
    server is reported by the caller's ``async with`` or ``add_stream``.
    """
    last_id = await last_generated_id(client, stream, key)
    return last_id if start is NEWEST else start_to_id(start)
