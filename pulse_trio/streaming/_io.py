"""The Redis calls that ``Stream``, ``Reader`` and ``Sink`` share, with their error mapping."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, cast

from .._boundary import Client, is_no_such_key, map_redis_errors, text
from ._event import NEWEST, StartPosition, start_to_id, wrong_type_error


@contextlib.contextmanager
def stream_errors(stream: str, operation: str) -> Iterator[None]:
    """Translate the client's errors of ``operation`` on ``stream`` into pulse-trio's.

    Raises:
        StreamError: The stream's key holds a value that is not a stream.
        pulse_trio.RedisUnavailableError: A transient error.
        pulse_trio.RedisCommandError: Any other error reply.
    """
    with map_redis_errors(
        f"stream {stream!r}: {operation}", wrong_type=lambda: wrong_type_error(stream)
    ):
        yield


async def xinfo_stream(
    client: Client, stream: str, key: str, operation: str
) -> Mapping[str, Any] | None:
    """``XINFO STREAM``, or ``None`` when the stream does not exist.

    Raises:
        StreamError, pulse_trio.RedisUnavailableError, pulse_trio.RedisCommandError:
            See :func:`stream_errors`.
    """
    with stream_errors(stream, operation):
        try:
            raw = await client.xinfo_stream(key)
        except Exception as exc:
            if is_no_such_key(exc):
                return None
            raise
    return cast(Mapping[str, Any], raw)


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
